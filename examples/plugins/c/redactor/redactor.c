// An email/card/password redactor in C: exactly the rule of the Rust reference redactor
// (plugins/example-redactor), so that host/tests/languages.rs can check both return the same edits.
// Only string-typed attribute values are looked at:
//   1. key `password`: the attribute is removed (reason `password`);
//   2. a value of only ASCII digits, spaces and `-` with 13 to 19 digits (a card number): every digit but
//      the last four is masked, one 1-byte range per digit (reason `card`);
//   3. otherwise the local part of each email-looking token is masked up to the `@` (reason `email`).
// Config: {} (no options). Build: ../build.sh.
//
// The trace arrives packed: `trace->text` holds every string and each field names a byte range of it.
// Matching works on those bytes (ASCII only), so ranges fall on UTF-8 boundaries. Returned lists and
// strings are malloc'ed: the generated post-return code frees them.

#include <stdlib.h>

#include "../common/config.h"
#include "redactor.h"

typedef exports_tailgate_plugin_redaction_edit_t edit_t;
typedef exports_tailgate_plugin_redaction_mask_range_t mask_range_t;

bool exports_tailgate_plugin_redaction_init(redactor_string_t *config,
                                            exports_tailgate_plugin_redaction_interest_t *ret,
                                            redactor_string_t *err) {
  json_t j = {config->ptr, config->ptr + config->len};
  const uint8_t *key = NULL;
  size_t key_len = 0;
  bool ok = json_done(&j) || (json_eat(&j, '{') && json_eat(&j, '}') && json_done(&j));
  if (!ok) {
    j.p = config->ptr;
    if (json_eat(&j, '{') && json_string(&j, &key, &key_len)) {
      static const char prefix[] = "invalid configuration: unknown field `";
      static const char suffix[] = "`, this redactor has no options";
      size_t a = sizeof prefix - 1, c = sizeof suffix - 1;
      err->len = a + key_len + c;
      err->ptr = malloc(err->len);
      memcpy(err->ptr, prefix, a);
      memcpy(err->ptr + a, key, key_len);
      memcpy(err->ptr + a + key_len, suffix, c);
    } else {
      redactor_string_dup(err, "invalid configuration: expected a JSON object");
    }
  }
  redactor_string_free(config);
  if (ok) memset(ret, 0, sizeof *ret);
  return ok;
}

static bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
static bool is_alnum(uint8_t b) { return is_digit(b) || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z'); }
static bool is_local(uint8_t b) { return is_alnum(b) || b == '.' || b == '_' || b == '%' || b == '+' || b == '-'; }
static bool is_domain(uint8_t b) { return is_alnum(b) || b == '.' || b == '-'; }

// Growable list of mask ranges.
typedef struct {
  mask_range_t *ptr;
  size_t len, cap;
} ranges_t;

static void push_range(ranges_t *r, uint32_t start, uint32_t len) {
  if (r->len == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 8;
    r->ptr = realloc(r->ptr, r->cap * sizeof *r->ptr);
  }
  r->ptr[r->len++] = (mask_range_t){start, len};
}

// When `v` is a card number, pushes a range per digit but the last four and returns true.
static bool card_digits(const uint8_t *v, size_t n, ranges_t *out) {
  size_t digits = 0;
  for (size_t i = 0; i < n; i++) {
    if (is_digit(v[i])) {
      digits++;
    } else if (v[i] != ' ' && v[i] != '-') {
      return false;
    }
  }
  if (digits < 13 || digits > 19) return false;
  size_t masked = 0;
  for (size_t i = 0; i < n && masked < digits - 4; i++) {
    if (is_digit(v[i])) {
      push_range(out, (uint32_t)i, 1);
      masked++;
    }
  }
  return true;
}

// Pushes the range of the local part of each email in `v`.
static void email_locals(const uint8_t *v, size_t n, ranges_t *out) {
  size_t i = 0;
  while (i < n) {
    if (v[i] != '@') {
      i++;
      continue;
    }
    size_t start = i;
    while (start > 0 && is_local(v[start - 1])) start--;
    size_t end = i + 1;
    while (end < n && is_domain(v[end])) end++;
    bool dotted = false;
    for (size_t k = i + 2; k + 1 < end; k++) dotted |= v[k] == '.';
    if (start < i && dotted) {
      push_range(out, (uint32_t)start, (uint32_t)(i - start));
      i = end;
    } else {
      i++;
    }
  }
}

// Growable list of edits.
typedef struct {
  edit_t *ptr;
  size_t len, cap;
} edits_t;

static edit_t *push_edit(edits_t *e, size_t field, uint8_t tag, const char *reason) {
  if (e->len == e->cap) {
    e->cap = e->cap ? e->cap * 2 : 8;
    e->ptr = realloc(e->ptr, e->cap * sizeof *e->ptr);
  }
  edit_t *x = &e->ptr[e->len++];
  memset(x, 0, sizeof *x);
  x->field = (uint32_t)field;
  x->action.tag = tag;
  x->reason.is_some = true;
  redactor_string_dup(&x->reason.val, reason);
  return x;
}

void exports_tailgate_plugin_redaction_redact(exports_tailgate_plugin_redaction_trace_summary_t *summary,
                                              exports_tailgate_plugin_redaction_packed_trace_t *trace,
                                              exports_tailgate_plugin_redaction_list_edit_t *ret) {
  const uint8_t *text = trace->text.ptr;
  edits_t edits = {0};
  for (size_t i = 0; i < trace->fields.len; i++) {
    const exports_tailgate_plugin_redaction_text_field_t *f = &trace->fields.ptr[i];
    bool attribute = f->kind == EXPORTS_TAILGATE_PLUGIN_REDACTION_FIELD_KIND_RESOURCE_ATTRIBUTE ||
                     f->kind == EXPORTS_TAILGATE_PLUGIN_REDACTION_FIELD_KIND_SCOPE_ATTRIBUTE ||
                     f->kind == EXPORTS_TAILGATE_PLUGIN_REDACTION_FIELD_KIND_SPAN_ATTRIBUTE ||
                     f->kind == EXPORTS_TAILGATE_PLUGIN_REDACTION_FIELD_KIND_EVENT_ATTRIBUTE ||
                     f->kind == EXPORTS_TAILGATE_PLUGIN_REDACTION_FIELD_KIND_LINK_ATTRIBUTE;
    if (!attribute || f->value_type != EXPORTS_TAILGATE_PLUGIN_REDACTION_VALUE_TYPE_STR) continue;
    if (bytes_eq(text + f->key.offset, f->key.len, "password")) {
      push_edit(&edits, i, EXPORTS_TAILGATE_PLUGIN_REDACTION_EDIT_ACTION_REMOVE, "password");
      continue;
    }
    const uint8_t *value = text + f->value.offset;
    ranges_t ranges = {0};
    const char *reason = "card";
    if (!card_digits(value, f->value.len, &ranges)) {
      email_locals(value, f->value.len, &ranges);
      reason = "email";
    }
    if (ranges.len == 0) {
      free(ranges.ptr);
      continue;
    }
    edit_t *e = push_edit(&edits, i, EXPORTS_TAILGATE_PLUGIN_REDACTION_EDIT_ACTION_MASK, reason);
    e->action.val.mask.ptr = ranges.ptr;
    e->action.val.mask.len = ranges.len;
  }
  ret->ptr = edits.ptr;
  ret->len = edits.len;
  exports_tailgate_plugin_redaction_trace_summary_free(summary);
  exports_tailgate_plugin_redaction_packed_trace_free(trace);
}

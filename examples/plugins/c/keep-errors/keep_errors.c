// keep-errors, in C: the same contract and decisions as the Rust `keep-errors` plugin
// (plugins/keep-errors). Keeps every trace with a span whose status is ERROR and, optionally, every trace
// with an HTTP status code in the configured classes (`http.response.status_code` / `http.status_code`).
// Abstains otherwise.
//
// Config (JSON, all optional): {"status_error": true, "http_status": ["5xx", 429]}
// Build: ../build.sh (wit-bindgen c, clang --target=wasm32-wasi, wasm-tools component new).
//
// Ownership, as wit-bindgen's C bindings define it: arguments belong to the callee (freed here with the
// generated *_free functions); returned strings and lists must be malloc'ed, the generated post-return
// code frees them.

#include <stdlib.h>

#include "../common/config.h"
#include "sampler.h"

#define MAX_MATCHES 32

// One configured status match: a class (`5xx`: code / 100 == value) or an exact code.
typedef struct {
  bool klass;
  int64_t value;
} status_match_t;

static bool status_error = true;
static status_match_t matches[MAX_MATCHES];
static size_t match_count = 0;

static const char *STATUS_KEYS[2] = {"http.response.status_code", "http.status_code"};

// Sets `err` to a malloc'ed "invalid configuration: <what><detail>" and returns false.
static bool fail(sampler_string_t *err, const char *what, const uint8_t *detail, size_t detail_len,
                 const char *after) {
  static const char prefix[] = "invalid configuration: ";
  size_t a = strlen(prefix), b = strlen(what), c = strlen(after);
  err->len = a + b + detail_len + c;
  err->ptr = malloc(err->len);
  memcpy(err->ptr, prefix, a);
  memcpy(err->ptr + a, what, b);
  if (detail_len) memcpy(err->ptr + a + b, detail, detail_len);
  memcpy(err->ptr + a + b + detail_len, after, c);
  return false;
}

// Parses one `http_status` entry: 429, "429", "5xx" (case-insensitive, spaces trimmed).
static bool parse_entry(json_t *j, status_match_t *m, sampler_string_t *err) {
  int64_t code;
  if (json_uint(j, &code)) {
    if (code > 65535) return fail(err, "http_status entry out of range", NULL, 0, "");
    m->klass = false;
    m->value = code;
    return true;
  }
  const uint8_t *s;
  size_t n;
  if (!json_string(j, &s, &n)) return fail(err, "http_status entries are strings or numbers", NULL, 0, "");
  while (n && *s == ' ') s++, n--;
  while (n && s[n - 1] == ' ') n--;
  if (n == 3 && s[0] >= '1' && s[0] <= '5' && (s[1] | 0x20) == 'x' && (s[2] | 0x20) == 'x') {
    m->klass = true;
    m->value = s[0] - '0';
    return true;
  }
  int64_t v = 0;
  bool digits = n > 0 && n <= 5;
  for (size_t i = 0; digits && i < n; i++) {
    digits = s[i] >= '0' && s[i] <= '9';
    v = v * 10 + (s[i] - '0');
  }
  if (digits && v <= 65535) {
    m->klass = false;
    m->value = v;
    return true;
  }
  return fail(err, "http_status entry \"", s, n, "\" is neither a class like \"5xx\" nor a code");
}

static bool parse_config(json_t *j, sampler_string_t *err) {
  status_error = true;
  match_count = 0;
  if (json_done(j)) return true;  // empty config: the defaults
  if (!json_eat(j, '{')) return fail(err, "expected a JSON object", NULL, 0, "");
  if (json_eat(j, '}')) return json_done(j) ? true : fail(err, "trailing text", NULL, 0, "");
  do {
    const uint8_t *key;
    size_t key_len;
    if (!json_string(j, &key, &key_len) || !json_eat(j, ':')) return fail(err, "bad JSON", NULL, 0, "");
    if (bytes_eq(key, key_len, "status_error")) {
      if (!json_bool(j, &status_error)) return fail(err, "status_error must be a boolean", NULL, 0, "");
    } else if (bytes_eq(key, key_len, "http_status")) {
      if (!json_eat(j, '[')) return fail(err, "http_status must be a list", NULL, 0, "");
      if (!json_eat(j, ']')) {
        do {
          if (match_count == MAX_MATCHES) return fail(err, "too many http_status entries", NULL, 0, "");
          if (!parse_entry(j, &matches[match_count++], err)) return false;
        } while (json_eat(j, ','));
        if (!json_eat(j, ']')) return fail(err, "bad JSON in http_status", NULL, 0, "");
      }
    } else {
      return fail(err, "unknown field `", key, key_len, "`, expected one of `status_error`, `http_status`");
    }
  } while (json_eat(j, ','));
  if (!json_eat(j, '}') || !json_done(j)) return fail(err, "bad JSON", NULL, 0, "");
  return true;
}

bool exports_tailgate_plugin_sampling_init(sampler_string_t *config,
                                           exports_tailgate_plugin_sampling_interest_t *ret,
                                           sampler_string_t *err) {
  json_t j = {config->ptr, config->ptr + config->len};
  bool ok = parse_config(&j, err);
  sampler_string_free(config);
  if (!ok) return false;
  memset(ret, 0, sizeof *ret);
  if (match_count > 0) {
    ret->span_attributes.len = 2;
    ret->span_attributes.ptr = malloc(2 * sizeof(sampler_string_t));
    for (size_t i = 0; i < 2; i++) sampler_string_dup(&ret->span_attributes.ptr[i], STATUS_KEYS[i]);
  }
  return true;
}

// The status code in a projected value (an int, or a string of digits), or -1.
static int64_t status_code(const tailgate_plugin_types_attribute_value_t *v) {
  if (v->tag == TAILGATE_PLUGIN_TYPES_ATTRIBUTE_VALUE_INT) return v->val.int_;
  if (v->tag != TAILGATE_PLUGIN_TYPES_ATTRIBUTE_VALUE_STR) return -1;
  const sampler_string_t *s = &v->val.str;
  if (s->len == 0 || s->len > 18) return -1;
  int64_t code = 0;
  for (size_t i = 0; i < s->len; i++) {
    if (s->ptr[i] < '0' || s->ptr[i] > '9') return -1;
    code = code * 10 + (s->ptr[i] - '0');
  }
  return code;
}

static bool matches_code(int64_t code) {
  for (size_t i = 0; i < match_count; i++) {
    if (matches[i].klass ? code / 100 == matches[i].value : code == matches[i].value) return true;
  }
  return false;
}

static void decide(const exports_tailgate_plugin_sampling_trace_summary_t *summary,
                   const exports_tailgate_plugin_sampling_list_projected_attribute_t *attributes,
                   exports_tailgate_plugin_sampling_decision_t *ret) {
  memset(ret, 0, sizeof *ret);
  ret->verdict = EXPORTS_TAILGATE_PLUGIN_SAMPLING_VERDICT_ABSTAIN;
  if (status_error && summary->error_span_count > 0) {
    ret->verdict = EXPORTS_TAILGATE_PLUGIN_SAMPLING_VERDICT_KEEP;
    ret->reason.is_some = true;
    sampler_string_dup(&ret->reason.val, "error");
    return;
  }
  for (size_t i = 0; i < attributes->len; i++) {
    int64_t code = status_code(&attributes->ptr[i].value);
    if (code >= 0 && matches_code(code)) {
      ret->verdict = EXPORTS_TAILGATE_PLUGIN_SAMPLING_VERDICT_KEEP;
      ret->reason.is_some = true;
      sampler_string_dup(&ret->reason.val, "http_status");
      return;
    }
  }
}

void exports_tailgate_plugin_sampling_decide(
    exports_tailgate_plugin_sampling_trace_summary_t *summary,
    exports_tailgate_plugin_sampling_list_projected_attribute_t *attributes,
    exports_tailgate_plugin_sampling_trace_t *maybe_full, exports_tailgate_plugin_sampling_decision_t *ret) {
  decide(summary, attributes, ret);
  exports_tailgate_plugin_sampling_trace_summary_free(summary);
  exports_tailgate_plugin_sampling_list_projected_attribute_free(attributes);
  if (maybe_full) exports_tailgate_plugin_sampling_trace_free(maybe_full);
}

// A minimal reader for the plugins' JSON configuration: just enough JSON (objects, arrays, strings
// without escapes, integers, booleans) for flat option objects. Header-only, no allocation, no libc I/O.
#ifndef TAILGATE_EXAMPLE_CONFIG_H
#define TAILGATE_EXAMPLE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} json_t;

static inline void json_ws(json_t *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

// Consumes `c` (after whitespace); false when the next byte is something else.
static inline bool json_eat(json_t *j, uint8_t c) {
  json_ws(j);
  if (j->p < j->end && *j->p == c) {
    j->p++;
    return true;
  }
  return false;
}

// Reads a string (no escapes): its bytes are [*start, *start + *len).
static inline bool json_string(json_t *j, const uint8_t **start, size_t *len) {
  if (!json_eat(j, '"')) return false;
  *start = j->p;
  while (j->p < j->end && *j->p != '"') {
    if (*j->p == '\\') return false;
    j->p++;
  }
  if (j->p == j->end) return false;
  *len = (size_t)(j->p - *start);
  j->p++;
  return true;
}

// Reads a non-negative integer below 2^31.
static inline bool json_uint(json_t *j, int64_t *out) {
  json_ws(j);
  if (j->p == j->end || *j->p < '0' || *j->p > '9') return false;
  int64_t v = 0;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
    v = v * 10 + (*j->p - '0');
    if (v > 0x7fffffff) return false;
    j->p++;
  }
  *out = v;
  return true;
}

static inline bool json_literal(json_t *j, const char *word) {
  size_t n = strlen(word);
  json_ws(j);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return false;
  j->p += n;
  return true;
}

static inline bool json_bool(json_t *j, bool *out) {
  if (json_literal(j, "true")) {
    *out = true;
    return true;
  }
  if (json_literal(j, "false")) {
    *out = false;
    return true;
  }
  return false;
}

// True when only whitespace is left.
static inline bool json_done(json_t *j) {
  json_ws(j);
  return j->p == j->end;
}

// Whether bytes [s, s + n) equal the NUL-terminated `word`.
static inline bool bytes_eq(const uint8_t *s, size_t n, const char *word) {
  return n == strlen(word) && memcmp(s, word, n) == 0;
}

#endif

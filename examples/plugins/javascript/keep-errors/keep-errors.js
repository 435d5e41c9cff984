// keep-errors, in JavaScript: the same contract and decisions as the Rust `keep-errors` plugin
// (plugins/keep-errors). Keeps every trace with a span whose status is ERROR and, optionally, every trace
// with an HTTP status code in the configured classes (`http.response.status_code` / `http.status_code`).
// Abstains otherwise.
//
// Config (JSON, all optional): {"status_error": true, "http_status": ["5xx", 429]}
// Build: ../build.sh (componentize-js), world tailgate:plugin/sampler@0.1.0.
//
// How WIT maps to JavaScript here: the exported interface `sampling` is an exported object; records are
// objects with camelCase fields; enums are kebab-case strings; variants are {tag, val}; u64/s64 are BigInt;
// an `option` is the value or undefined; a `result` error is a thrown value.

const STATUS_KEYS = ["http.response.status_code", "http.status_code"];
const KNOWN_KEYS = new Set(["status_error", "http_status"]);

// Module state: set by init, read by decide.
let statusError = true;
let http = [];

/** A predicate on an integer status code for one `http_status` entry, or throws. */
function parseStatus(entry) {
  if (typeof entry === "number" && Number.isInteger(entry) && entry >= 0 && entry <= 65535) {
    return (code) => code === entry;
  }
  if (typeof entry !== "string") {
    throw `invalid configuration: http_status entry ${JSON.stringify(entry)} is neither a class like "5xx" nor a code`;
  }
  const text = entry.trim().toLowerCase();
  const klass = /^([1-5])xx$/.exec(text);
  if (klass) {
    const n = Number(klass[1]);
    return (code) => Math.trunc(code / 100) === n;
  }
  if (/^[0-9]+$/.test(text) && Number(text) <= 65535) {
    const exact = Number(text);
    return (code) => code === exact;
  }
  throw `invalid configuration: http_status entry ${JSON.stringify(text)} is neither a class like "5xx" nor a code`;
}

/** An HTTP status code in a projected attribute value, or undefined. */
function statusCode(value) {
  if (value.tag === "int") {
    return Number(value.val);
  }
  if (value.tag === "str" && /^[0-9]+$/.test(value.val)) {
    return Number(value.val);
  }
  return undefined;
}

export const sampling = {
  init(config) {
    let conf;
    try {
      conf = JSON.parse(config || "{}");
    } catch (e) {
      throw `invalid configuration: ${e.message}`;
    }
    if (conf === null || typeof conf !== "object" || Array.isArray(conf)) {
      throw "invalid configuration: expected a JSON object";
    }
    for (const key of Object.keys(conf)) {
      if (!KNOWN_KEYS.has(key)) {
        throw `invalid configuration: unknown field \`${key}\`, expected one of \`status_error\`, \`http_status\``;
      }
    }
    statusError = conf.status_error === undefined ? true : Boolean(conf.status_error);
    http = (conf.http_status || []).map(parseStatus);
    return {
      spanAttributes: http.length > 0 ? STATUS_KEYS : [],
      resourceAttributes: [],
      scopeAttributes: [],
      fullTrace: false,
      stateful: false,
    };
  },

  decide(summary, attributes, _full) {
    if (statusError && summary.errorSpanCount > 0) {
      return { verdict: "keep", probability: undefined, reason: "error" };
    }
    for (const a of attributes) {
      const code = statusCode(a.value);
      if (code !== undefined && http.some((match) => match(code))) {
        return { verdict: "keep", probability: undefined, reason: "http_status" };
      }
    }
    return { verdict: "abstain", probability: undefined, reason: undefined };
  },
};

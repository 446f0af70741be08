// Run once per sandbox, before any hook (docs/hooks.md). Gets the native helpers, locks the
// global scope down, and returns the sandbox's private functions (never reachable by a hook).
// `shared`: the sandbox runs the hooks of several instances, so the built-ins are frozen (a
// sandbox of one instance's hooks leaves them as they are: there is no one else to protect).
(function (natives, shared) {
  "use strict";
  const DONE = {};
  const global = globalThis;

  // No eval of strings: neither `eval` nor any function constructor.
  const refuse = function () {
    throw new EvalError("eval and Function() are not available in hooks");
  };
  delete global.eval;
  for (const f of [function () {}, function* () {}, async function () {}, async function* () {}]) {
    Object.defineProperty(Object.getPrototypeOf(f), "constructor", { value: refuse });
  }
  refuse.prototype = Function.prototype;
  global.Function = refuse;

  // Time from the engine's clock: `Date.now()` and `new Date()` read the run's time.
  const RealDate = Date;
  const EngineDate = function Date(...args) {
    if (!new.target) {
      return new RealDate(natives.now()).toString();
    }
    return args.length === 0 ? new RealDate(natives.now()) : new RealDate(...args);
  };
  EngineDate.prototype = RealDate.prototype;
  EngineDate.now = () => natives.now();
  EngineDate.parse = RealDate.parse;
  EngineDate.UTC = RealDate.UTC;
  Object.defineProperty(RealDate.prototype, "constructor", { value: EngineDate });
  global.Date = EngineDate;

  const show = (value) => {
    if (typeof value === "string") return value;
    try {
      const text = JSON.stringify(value);
      return text === undefined ? String(value) : text;
    } catch (_) {
      return String(value);
    }
  };
  const log = (...args) => natives.log(args.map(show).join(" "));
  const console = Object.freeze({ log, info: log, warn: log, error: log, debug: log });

  // `CE.hmac(algorithm)(encoding)(key, text)`, as the platform's library wrote it.
  const hmac = (algorithm) => (encoding) => (key, text) =>
    natives.hmac(String(algorithm), String(encoding), String(key), String(text));
  const CE = Object.freeze({
    b64: (text) => natives.b64(String(text)),
    decodeB64: (text) => natives.decodeB64(String(text)),
    decode64: (text) => natives.decodeB64(String(text)),
    hmac,
    hmacSha1Hex: hmac("sha1")("hex"),
    hmacSha256Hex: hmac("sha256")("hex"),
    hmacMd5Hex: hmac("md5")("hex"),
    hmacMd5Base64: hmac("md5")("base64"),
    randomEmail: () => natives.randomString(10).toLowerCase() + "@example.com",
    md5: (text) => natives.md5(String(text)),
    sha1: (text) => natives.sha1(String(text)),
    sha256: (text) => natives.sha256(String(text)),
    hmacSha1Base64: (key, text) => natives.hmacSha1Base64(String(key), String(text)),
    hmacSha256Base64: (key, text) => natives.hmacSha256Base64(String(key), String(text)),
    randomString: (length) => natives.randomString(length === undefined ? 16 : Number(length)),
    uuid: () => natives.uuid(),
    decodeJwt: (token) => {
      const parts = String(token).split(".");
      if (parts.length < 2) throw new TypeError("CE.decodeJwt: not a JWT (expected header.payload.signature)");
      const decode = (part) => JSON.parse(natives.decodeB64(part.replace(/-/g, "+").replace(/_/g, "/")));
      return { header: decode(parts[0]), payload: decode(parts[1]) };
    },
  });

  // Modules: lodash (shipped, evaluated on first use and frozen like the built-ins, so that one
  // hook cannot change it for the next); nothing else.
  let lodash;
  const require = (name) => {
    name = String(name);
    if (name === "lodash") {
      // Frozen (in a shared sandbox) while the hook's budget is paused, like the loading.
      if (lodash === undefined) lodash = natives.lodash(shared ? freeze : undefined);
      return lodash;
    }
    throw new Error(
      "require('" + name + "') is not available: hooks run without Node.js modules " +
        "(no network, no file system; only `lodash` is shipped); write the code in the hook itself",
    );
  };

  const done = function (answer) {
    natives.done(answer === undefined || answer === null ? {} : answer);
    throw DONE;
  };
  const fixed = { CE, console, require, done, print: log };
  for (const name of Object.keys(fixed)) {
    Object.defineProperty(global, name, { value: fixed[name], writable: false, configurable: false });
  }

  // Freeze the built-ins so that what one instance's hook does to them (prototype pollution)
  // cannot reach another instance's hook run in the same sandbox.
  const seen = new Set();
  const freeze = (value) => {
    if ((typeof value !== "object" && typeof value !== "function") || value === null || seen.has(value)) return;
    seen.add(value);
    Object.freeze(value);
    const isFunction = typeof value === "function";
    // An indexed loop: `for...of` would make an iterator per object.
    const keys = Reflect.ownKeys(value);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      // A built-in function's `length` and `name` are data properties holding primitives.
      if (isFunction && (key === "length" || key === "name")) continue;
      // Read directly: a descriptor would be a new object per property. An accessor that
      // refuses the prototype as its receiver (`Map.prototype.size`) throws: skipped.
      let child;
      try {
        child = value[key];
      } catch (_) {
        continue;
      }
      freeze(child);
    }
    freeze(Object.getPrototypeOf(value));
  };
  if (shared) {
    for (const name of Object.getOwnPropertyNames(global)) {
      if (name !== "globalThis") freeze(global[name]);
    }
  }
  const baseline = new Set(Object.getOwnPropertyNames(global));

  return {
    DONE,
    // Removes what the previous hook left in the global scope and sets this hook's inputs.
    enter(inputs) {
      for (const name of Object.getOwnPropertyNames(global)) {
        if (!baseline.has(name)) delete global[name];
      }
      for (const name of Object.keys(inputs)) {
        global[name] = inputs[name];
      }
    },
  };
});

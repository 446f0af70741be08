//! The native half of the helper library hooks call as `CE.*` (bootstrap.js wraps them), and
//! the natives behind `Date.now()`, `console.log` and `done`. Hashes and signatures come from
//! the `RustCrypto` crates; nothing here reads the file system, the network or the environment.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit as _, Mac};
use rquickjs::context::EvalOptions;
use rquickjs::{Ctx, Exception, Function, Object, Value};
use sha2::Digest as _;

use super::{CallState, MAX_LOG_LINE, MAX_LOG_LINES};

/// lodash 4 (docs/hooks.md), evaluated when a hook first calls `require('lodash')`: the
/// minified build from the npm registry, with its MIT licence kept in the binary as a comment.
/// It runs as a `CommonJS` module with `self` as its global, so that it finds the global object
/// without `Function('return this')` (refused in hooks).
const LODASH: &str = concat!(
    "/*\n",
    include_str!("vendor/lodash.LICENSE"),
    "*/\n(function () { var module = { exports: {} }; var exports = module.exports; var self = globalThis;\n",
    include_str!("vendor/lodash.min.js"),
    "\nreturn module.exports; })()"
);

/// The longest string `CE.randomString` makes.
const MAX_RANDOM: usize = 4_096;

/// The natives object handed to bootstrap.js.
/// `deadline` is the running hook's: loading lodash does not count against it.
pub(super) fn natives<'js>(
    ctx: &Ctx<'js>,
    state: &Rc<CallState>,
    deadline: &Rc<Cell<Option<Instant>>>,
) -> rquickjs::Result<Object<'js>> {
    let natives = Object::new(ctx.clone())?;
    let now = Rc::clone(state);
    #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit in an f64 exactly
    natives.set(
        "now",
        Function::new(ctx.clone(), move || now.now_ms.get() as f64)?,
    )?;
    let logs = Rc::clone(state);
    natives.set(
        "log",
        Function::new(ctx.clone(), move |line: String| {
            let mut logs = logs.logs.borrow_mut();
            if logs.len() < MAX_LOG_LINES {
                logs.push(line.chars().take(MAX_LOG_LINE).collect());
            }
        })?,
    )?;
    let answer = Rc::clone(state);
    natives.set(
        "done",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, value: Value<'js>| {
            let mut slot = answer.answer.borrow_mut();
            // The first `done` wins: the platform ended the script there.
            if slot.is_none() {
                let text = ctx
                    .json_stringify(value)?
                    .map(|text| text.to_string())
                    .transpose()?;
                *slot = Some(text.unwrap_or_else(|| "null".to_owned()));
            }
            rquickjs::Result::Ok(())
        })?,
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "b64",
        Function::new(ctx.clone(), move |text: String| {
            record(&seen, &[&text], STANDARD.encode(&text))
        }),
    )?;
    natives.set(
        "decodeB64",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, text: String| {
            let trimmed = text.trim_end_matches('=');
            let bytes = STANDARD_NO_PAD
                .decode(trimmed)
                .map_err(|error| Exception::throw_type(&ctx, &format!("CE.decodeB64: {error}")))?;
            rquickjs::Result::Ok(String::from_utf8_lossy(&bytes).into_owned())
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "md5",
        Function::new(ctx.clone(), move |text: String| {
            record(
                &seen,
                &[&text],
                hex(&<md5::Md5 as md5::Digest>::digest(text.as_bytes())),
            )
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "sha1",
        Function::new(ctx.clone(), move |text: String| {
            record(&seen, &[&text], hex(&sha1::Sha1::digest(text.as_bytes())))
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "sha256",
        Function::new(ctx.clone(), move |text: String| {
            record(&seen, &[&text], hex(&sha2::Sha256::digest(text.as_bytes())))
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "hmacSha1Base64",
        Function::new(ctx.clone(), move |key: String, text: String| {
            let mut mac =
                Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
            mac.update(text.as_bytes());
            record(
                &seen,
                &[&key, &text],
                STANDARD.encode(mac.finalize().into_bytes()),
            )
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "hmacSha256Base64",
        Function::new(ctx.clone(), move |key: String, text: String| {
            record(
                &seen,
                &[&key, &text],
                STANDARD.encode(hmac_sha256(&key, &text)),
            )
        }),
    )?;
    let seen = Rc::clone(state);
    natives.set(
        "hmac",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, algorithm: String, encoding: String, key: String, text: String| {
                let mac = match algorithm.to_ascii_lowercase().as_str() {
                    "sha1" => {
                        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes())
                            .expect("any key length");
                        mac.update(text.as_bytes());
                        mac.finalize().into_bytes().to_vec()
                    }
                    "sha256" => hmac_sha256(&key, &text),
                    "md5" => hmac_md5(key.as_bytes(), text.as_bytes()),
                    _ => {
                        return Err(Exception::throw_type(
                            &ctx,
                            &format!("CE.hmac: no algorithm `{algorithm}` (sha1, sha256 or md5)"),
                        ));
                    }
                };
                let made = match encoding.to_ascii_lowercase().as_str() {
                    "hex" => hex(&mac),
                    "base64" => STANDARD.encode(mac),
                    _ => {
                        return Err(Exception::throw_type(
                            &ctx,
                            &format!("CE.hmac: no encoding `{encoding}` (hex or base64)"),
                        ));
                    }
                };
                Ok(record(&seen, &[&key, &text], made))
            },
        ),
    )?;
    natives.set(
        "randomString",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, length: f64| {
            if !(0.0..=4096.0).contains(&length) {
                return Err(Exception::throw_range(
                    &ctx,
                    &format!("CE.randomString: a length from 0 to {MAX_RANDOM}"),
                ));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
            let length = length as usize;
            Ok(random_string(length))
        }),
    )?;
    natives.set("uuid", Function::new(ctx.clone(), uuid))?;
    let deadline = Rc::clone(deadline);
    natives.set(
        "lodash",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, prepare: Option<Function<'js>>| -> rquickjs::Result<Value<'js>> {
                let mut options = EvalOptions::default();
                options.strict = false;
                options.filename = Some("lodash".to_owned());
                // The engine's own code, loaded once per sandbox and given to `prepare` (the
                // bootstrap's freeze): the hook's budget is paused meanwhile (the memory cap
                // still holds).
                let started = Instant::now();
                let paused = deadline.take();
                let loaded = ctx
                    .eval_with_options::<Value<'js>, _>(LODASH, options)
                    .and_then(|lodash| match prepare {
                        Some(prepare) => prepare.call::<_, ()>((lodash.clone(),)).map(|()| lodash),
                        None => Ok(lodash),
                    });
                deadline.set(paused.map(|at| at + started.elapsed()));
                loaded
            },
        ),
    )?;
    Ok(natives)
}

/// Keeps what a helper made from `inputs` (the caller learns it as a secret when an input holds
/// one), and gives it back.
fn record(state: &CallState, inputs: &[&str], made: String) -> String {
    let mut derived = state.derived.borrow_mut();
    for input in inputs {
        derived.push(((*input).to_owned(), made.clone()));
    }
    made
}

fn hmac_sha256(key: &str, text: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-MD5 (RFC 2104) over the `md5` digest: 64-byte blocks, a longer key hashed first.
fn hmac_md5(key: &[u8], text: &[u8]) -> Vec<u8> {
    use md5::Digest as _;
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..16].copy_from_slice(&md5::Md5::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = md5::Md5::new();
    inner.update(pad(0x36));
    inner.update(text);
    let mut outer = md5::Md5::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Letters and digits from the operating system's random source (bytes past the last whole
/// multiple of the alphabet's size are drawn again, so every character is as likely).
fn random_string(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(length);
    let mut bytes = [0u8; 64];
    while out.len() < length {
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        for byte in bytes {
            if out.len() < length && usize::from(byte) < 256 - 256 % ALPHABET.len() {
                out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    out
}

/// A random (version 4) UUID.
fn uuid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let text = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &text[..8],
        &text[8..12],
        &text[12..16],
        &text[16..20],
        &text[20..]
    )
}

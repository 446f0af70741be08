//! The sandbox that runs JavaScript hooks (docs/hooks.md): QuickJS through rquickjs, one
//! runtime per thread, made on first use and kept; each hook body is compiled once per process
//! and thread and called with a fresh set of inputs.
//!
//! A hook sees its inputs as globals, the helper library `CE`, `console.log`, `done` and a
//! `require` that refuses; nothing else: no file system, no network, no environment, no
//! `eval` or `Function()` of strings. What one instance's hooks do to the built-ins never
//! reaches another instance's: a thread's first sandbox belongs to the instance whose hook made
//! it; when a hook of another instance runs on the thread, the sandbox is made afresh with the
//! built-ins frozen and shared by every instance from then on. A process that serves one
//! instance (`engine run`) so never pays for freezing the built-ins. A runtime has a memory cap ([`MEMORY_LIMIT`]) and each call a time
//! budget, enforced by QuickJS's interrupt handler; a runtime that went over either is thrown
//! away. `Date.now()` and `new Date()` read the time the caller passes (the engine's clock).
//!
//! This module knows nothing of requests: [`run`] takes the inputs as a JSON object and gives
//! the hook's answer as one; `engine.rs` maps them to and from the request and response.

pub(crate) mod exchange;
mod helpers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_spec::hook::{Intrinsics, SCRIPT_NAME, stack_position, wrap};
use rquickjs::context::EvalOptions;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Object, Persistent, Runtime, Value,
};
use serde_json::{Map, Value as Json};

/// The most memory one thread's hooks may hold at once.
pub(crate) const MEMORY_LIMIT: usize = 32 << 20;

/// The most stack a hook may use (deep recursion ends with a `RangeError`).
const STACK_LIMIT: usize = 512 << 10;

/// The most `console.log` lines kept from one call, and characters per line.
const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE: usize = 2_000;

/// The default time budget of one hook.
pub(crate) const DEFAULT_BUDGET: Duration = Duration::from_millis(250);

/// What a hook answered.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// The object given to `done(...)` (or returned by the script); empty when it gave nothing.
    pub(crate) output: Map<String, Json>,
    /// What it logged, in order, unmasked: the caller masks it.
    pub(crate) logs: Vec<String>,
    /// What the `CE` helpers made from an input that holds a secret (the caller knows which
    /// texts are secrets): learnt as secrets in turn.
    pub(crate) derived: Vec<(String, String)>,
}

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It threw (or a helper refused): the message, and where in the body when known.
    Threw {
        message: String,
        at: Option<(usize, usize)>,
    },
    /// It ran past its time budget.
    TimedOut(Duration),
    /// It went over [`MEMORY_LIMIT`].
    OutOfMemory,
    /// It answered something that is not an object (or not JSON).
    BadAnswer(String),
}

/// Runs `body` with `inputs` as its globals for the instance `tenant` (any text that tells
/// instances apart, e.g. the store's identity of the instance): `now_ms` is what `Date.now()`
/// answers, `budget` the time it may take.
pub(crate) fn run(
    body: &Arc<str>,
    tenant: &str,
    inputs: &Map<String, Json>,
    now_ms: u64,
    budget: Duration,
) -> Result<Answer, Failure> {
    SANDBOX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let first = match slot.as_ref() {
            None => true,
            Some(sandbox) => match &sandbox.owner {
                // Another instance's hook: the owner's changes must not reach it.
                Some(owner) if **owner != *tenant => {
                    *slot = None;
                    false
                }
                _ => false,
            },
        };
        if slot.is_none() {
            let owner = first.then(|| Box::from(tenant));
            *slot = Some(Sandbox::new(owner).map_err(|error| Failure::Threw {
                message: format!("the JavaScript engine could not start: {error}"),
                at: None,
            })?);
        }
        let sandbox = slot.as_mut().expect("made above");
        let result = sandbox.call(body, inputs, now_ms, budget);
        if matches!(result, Err(Failure::TimedOut(_) | Failure::OutOfMemory)) {
            // A runtime interrupted or out of memory may be left in any state: start afresh.
            *slot = None;
        }
        result
    })
}

/// Leaves this thread's sandbox, if it has one, to the operating system: for a process that is
/// about to exit, whose memory is reclaimed anyway. Freeing a QuickJS runtime walks every object
/// it holds (about a million instructions, a twentieth of what a hook costs a whole `engine run`
/// process). The next hook of this thread makes a new sandbox.
pub fn leave_sandbox_to_exit() {
    SANDBOX.with(|cell| {
        if let Some(sandbox) = cell.borrow_mut().take() {
            std::mem::forget(sandbox);
        }
    });
}

thread_local! {
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
}

/// What the native helpers of one call share with the sandbox.
#[derive(Default)]
struct CallState {
    now_ms: Cell<u64>,
    answer: RefCell<Option<String>>,
    logs: RefCell<Vec<String>>,
    /// Every (input, output) of a `CE` helper that encodes, hashes or signs.
    derived: RefCell<Vec<(String, String)>>,
}

/// One QuickJS runtime and context, the compiled hooks and the private functions of the
/// bootstrap. Field order matters: values are dropped before the context that holds them.
struct Sandbox {
    /// The one instance whose hooks may run here (built-ins not frozen), or `None`: shared by
    /// every instance, built-ins frozen.
    owner: Option<Box<str>>,
    compiled: HashMap<Arc<str>, Persistent<Function<'static>>>,
    enter: Persistent<Function<'static>>,
    done_marker: Persistent<Object<'static>>,
    state: Rc<CallState>,
    deadline: Rc<Cell<Option<Instant>>>,
    context: Context,
    runtime: Runtime,
}

/// Hooks compile as [`SCRIPT_NAME`] (their stack frames are `hook:LINE:COLUMN`), the bootstrap
/// under another name, so that an error a helper throws points at the hook's line.
fn options(name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    options.strict = true;
    options.filename = Some(name.to_owned());
    options
}

impl Sandbox {
    fn new(owner: Option<Box<str>>) -> rquickjs::Result<Self> {
        let runtime = Runtime::new()?;
        runtime.set_memory_limit(MEMORY_LIMIT);
        runtime.set_max_stack_size(STACK_LIMIT);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let watched = Rc::clone(&deadline);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            watched.get().is_some_and(|at| Instant::now() >= at)
        })));
        let context = Context::custom::<Intrinsics>(&runtime)?;
        let state: Rc<CallState> = Rc::default();
        let (enter, done_marker) = context.with(|ctx| -> rquickjs::Result<_> {
            let natives = helpers::natives(&ctx, &state, &deadline)?;
            let bootstrap: Function =
                ctx.eval_with_options(include_str!("bootstrap.js"), options("engine"))?;
            let private: Object = bootstrap.call((natives, owner.is_none()))?;
            let enter: Function = private.get("enter")?;
            let marker: Object = private.get("DONE")?;
            Ok((
                Persistent::save(&ctx, enter),
                Persistent::save(&ctx, marker),
            ))
        })?;
        Ok(Self {
            owner,
            compiled: HashMap::new(),
            enter,
            done_marker,
            state,
            deadline,
            context,
            runtime,
        })
    }

    fn call(
        &mut self,
        body: &Arc<str>,
        inputs: &Map<String, Json>,
        now_ms: u64,
        budget: Duration,
    ) -> Result<Answer, Failure> {
        self.state.now_ms.set(now_ms);
        self.state.answer.replace(None);
        self.state.logs.replace(Vec::new());
        self.state.derived.replace(Vec::new());
        let started = Instant::now();
        self.deadline.set(Some(started + budget));
        let context = self.context.clone();
        let returned = context.with(|ctx| self.invoke(&ctx, body, inputs));
        self.deadline.set(None);
        let logs = self.state.logs.take();
        let derived = self.state.derived.take();
        let answer = self.state.answer.take();
        let returned = match returned {
            // QuickJS's uncatchable error when the interrupt handler stopped the script.
            Err(Failure::Threw { message, .. })
                if message == "interrupted" && started.elapsed() >= budget =>
            {
                return Err(Failure::TimedOut(budget));
            }
            Err(failure) if answer.is_none() => return Err(failure),
            Err(_) => None,
            Ok(returned) => returned,
        };
        // `done(x)` wins over a value the script returned (legacy scripts `return {...}`).
        let Some(text) = answer.or(returned) else {
            return Ok(Answer {
                output: Map::new(),
                logs,
                derived,
            });
        };
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::Object(output)) => Ok(Answer {
                output,
                logs,
                derived,
            }),
            Ok(Json::Null) => Ok(Answer {
                output: Map::new(),
                logs,
                derived,
            }),
            Ok(other) => Err(Failure::BadAnswer(format!(
                "the hook answered {}, not an object",
                kind_of(&other)
            ))),
            Err(error) => Err(Failure::BadAnswer(error.to_string())),
        }
    }

    /// The bytes the runtime holds (for tests: what loading lodash costs).
    #[cfg(test)]
    fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().memory_used_size
    }

    /// Compiles (once) and calls the hook; `Ok` holds what the script returned, as JSON.
    fn invoke(
        &mut self,
        ctx: &Ctx<'_>,
        body: &Arc<str>,
        inputs: &Map<String, Json>,
    ) -> Result<Option<String>, Failure> {
        let function = if let Some(function) = self.compiled.get(body) {
            function
                .clone()
                .restore(ctx)
                .map_err(|error| threw(ctx, error))?
        } else {
            let function: Function = ctx
                .eval_with_options(wrap(body), options(SCRIPT_NAME))
                .catch(ctx)
                .map_err(|error| caught(&error))?;
            self.compiled
                .insert(Arc::clone(body), Persistent::save(ctx, function.clone()));
            function
        };
        let inputs_text = Json::Object(inputs.clone()).to_string();
        let inputs = ctx
            .json_parse(inputs_text)
            .map_err(|error| threw(ctx, error))?;
        let enter = self
            .enter
            .clone()
            .restore(ctx)
            .map_err(|error| threw(ctx, error))?;
        enter
            .call::<_, ()>((inputs,))
            .catch(ctx)
            .map_err(|error| caught(&error))?;
        let marker = self
            .done_marker
            .clone()
            .restore(ctx)
            .map_err(|error| threw(ctx, error))?;
        match function.call::<_, Value>(()).catch(ctx) {
            Ok(value) if value.is_object() => Ok(ctx
                .json_stringify(value)
                .map_err(|error| threw(ctx, error))?
                .map(|text| text.to_string().unwrap_or_default())),
            Ok(_) => Ok(None),
            Err(CaughtError::Value(value))
                if value.as_object().is_some_and(|object| *object == marker) =>
            {
                Ok(None)
            }
            Err(error) => Err(caught(&error)),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The compiled functions hold references into the runtime: free them first.
        self.compiled.clear();
        self.runtime.run_gc();
    }
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn threw(ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
    if error.is_exception() {
        return caught(&CaughtError::from_error(ctx, error));
    }
    Failure::Threw {
        message: error.to_string(),
        at: None,
    }
}

fn caught(error: &CaughtError<'_>) -> Failure {
    match error {
        CaughtError::Exception(exception) => {
            let message = exception.message().unwrap_or_default();
            if message.contains("out of memory") {
                return Failure::OutOfMemory;
            }
            Failure::Threw {
                message,
                at: exception.stack().as_deref().and_then(stack_position),
            }
        }
        CaughtError::Value(value) => Failure::Threw {
            message: value
                .as_string()
                .and_then(|text| text.to_string().ok())
                .or_else(|| {
                    value
                        .ctx()
                        .json_stringify(value.clone())
                        .ok()
                        .flatten()
                        .and_then(|text| text.to_string().ok())
                })
                .unwrap_or_else(|| format!("a {}", value.type_name())),
            at: None,
        },
        CaughtError::Error(rquickjs::Error::Allocation) => Failure::OutOfMemory,
        CaughtError::Error(error) => Failure::Threw {
            message: error.to_string(),
            at: None,
        },
    }
}

#[cfg(test)]
mod tests;

//! `engine test [PATH...]`: runs connector tests (`*.test.json`) offline. Each test file names a
//! connector, an instance and a start time; its steps run resources against scripted vendor
//! answers (inline, or exchanges of a recorded cassette) with a virtual clock, and check the
//! requests sent, how the run ended, its output and the instance after it. The lifecycle
//! decisions are the same code as `engine run`: only the transport and the clock change.

mod file;
pub(crate) mod record;
mod replay;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use engine_runtime::{EngineBuilder, Inputs, ManualClock, NoObserver, RunRequest};
use engine_spec::{Connector, JsonPointer, Location, SourceMap};
use engine_store::{MemoryStore, State};
use serde_json::Value;

use self::file::Cassette;
use self::file::{
    CassetteRef, Exchange, ExchangeSpec, ExitClass, Expect, KeyCheck, KeyState, OutputCheck,
    TestFile,
};
use self::replay::{Failure, Placeholders, ReplayTransport};
use crate::Exit;

/// Where the virtual clock starts when a test names no time.
const DEFAULT_NOW: &str = "2030-01-01T00:00:00Z";

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Test files (`*.test.json`) or directories to search recursively (default: `.`).
    paths: Vec<PathBuf>,
    /// Run only the test files whose path, or one of whose steps' names, contains this text.
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// How to report: `human` (stderr), `json` (one object per step on stdout), `github`
    /// (workflow commands) or `junit` (XML on stdout, for CI dashboards).
    #[arg(long, value_enum, default_value = "human")]
    format: report::Format,
    /// Rewrite each failing step's `expect.exit` and `output[].equals` from what the run did, for
    /// review in a diff (like `insta --accept`).
    #[arg(long)]
    update: bool,
}

/// The outcome of one step.
#[derive(Debug, Clone)]
pub(crate) struct StepOutcome {
    /// Its position in `steps`.
    pub(crate) index: usize,
    /// Its name, or what it does.
    pub(crate) name: String,
    /// Where it is written.
    pub(crate) line: usize,
    /// The column.
    pub(crate) column: usize,
    /// Why it failed; empty when it passed.
    pub(crate) failures: Vec<String>,
}

/// The outcome of one test file.
#[derive(Debug, Clone)]
pub(crate) struct FileOutcome {
    /// The file.
    pub(crate) path: PathBuf,
    /// The steps run (all of them, unless the file is invalid).
    pub(crate) steps: Vec<StepOutcome>,
    /// Why the file could not run at all (exit 3).
    pub(crate) invalid: Option<String>,
}

pub(crate) fn test(args: &TestArgs) -> Exit {
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        discover(root, &mut files);
    }
    files.sort();
    files.dedup();
    let outcomes = run_all(&files, args);
    let outcomes: Vec<FileOutcome> = outcomes.into_iter().flatten().collect();
    report::print(&outcomes, args.format);
    if outcomes.iter().any(|outcome| outcome.invalid.is_some()) {
        Exit::Invalid
    } else if outcomes
        .iter()
        .any(|outcome| outcome.steps.iter().any(|step| !step.failures.is_empty()))
    {
        Exit::VendorError
    } else {
        Exit::Success
    }
}

/// Runs `files` on every core, each file on its own thread's runtime; results in file order.
fn run_all(files: &[PathBuf], args: &TestArgs) -> Vec<Option<FileOutcome>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(files.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Option<FileOutcome>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return done;
                    };
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(index) else {
                            break done;
                        };
                        done.push((index, runtime.block_on(run_file(file, args))));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

/// The test files under `path`: itself when it is a file, else every `*.test.json` below it
/// (hidden directories and `node_modules` skipped).
fn discover(path: &Path, files: &mut Vec<PathBuf>) {
    if !path.is_dir() {
        files.push(path.to_owned());
        return;
    }
    let Ok(entries) = fs_err::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            if !name.starts_with('.') && name != "node_modules" && name != "target" {
                discover(&entry_path, files);
            }
        } else if name.ends_with(".test.json") {
            files.push(entry_path);
        }
    }
}

/// A test file that cannot run.
fn invalid(path: &Path, message: String) -> FileOutcome {
    FileOutcome {
        path: path.to_owned(),
        steps: Vec::new(),
        invalid: Some(message),
    }
}

/// Runs one test file; `None` when `--filter` leaves it out.
async fn run_file(path: &Path, args: &TestArgs) -> Option<FileOutcome> {
    let source = match crate::input::read_text(path) {
        Ok(source) => source,
        Err(error) => return Some(invalid(path, error.to_string())),
    };
    let mut file: TestFile = match parse(&source) {
        Ok(file) => file,
        Err(message) => return Some(invalid(path, message)),
    };
    if let Some(filter) = &args.filter {
        let named = path.to_string_lossy().contains(filter.as_str())
            || file.steps.iter().any(|step| {
                step.name
                    .as_deref()
                    .is_some_and(|name| name.contains(filter.as_str()))
            });
        if !named {
            return None;
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Err(error) = crate::input::regular(&dir.join(&file.connector)) {
        return Some(invalid(
            path,
            format!("cannot read connector `{}`: {error}", file.connector),
        ));
    }
    let connector = match engine_spec::load(&dir.join(&file.connector)) {
        Ok(report) if !report.has_errors() => report.into_connector()?,
        Ok(_) => {
            return Some(invalid(
                path,
                format!(
                    "connector `{}` is invalid: run `engine validate` on it",
                    file.connector
                ),
            ));
        }
        Err(error) => {
            return Some(invalid(
                path,
                format!("cannot read connector `{}`: {error}", file.connector),
            ));
        }
    };
    let now = file.now.as_deref().unwrap_or(DEFAULT_NOW);
    let Ok(start) = now.parse::<jiff::Timestamp>() else {
        return Some(invalid(
            path,
            format!("`now` is not an RFC 3339 time: `{now}`"),
        ));
    };
    let clock = ManualClock::new(u64::try_from(start.as_millisecond()).unwrap_or(0));
    let store = MemoryStore::new();
    store.insert("i", file.instance.clone().into_iter().collect());
    let map = SourceMap::new(&source);
    let positions = step_positions(&source, &map, path, file.steps.len());
    let mut steps = Vec::new();
    let mut changed = false;
    for (index, &(line, column)) in positions.iter().enumerate() {
        let step = &file.steps[index];
        let name = step
            .name
            .clone()
            .unwrap_or_else(|| match (&step.run, &step.advance) {
                (Some(run), _) => format!("run `{}`", run.resource),
                (None, Some(advance)) => format!("advance {advance}"),
                (None, None) => format!("step {}", index + 1),
            });
        let mut outcome = StepOutcome {
            index,
            name,
            line,
            column,
            failures: Vec::new(),
        };
        if let Some(advance) = &step.advance {
            match humantime::parse_duration(advance) {
                Ok(duration) => {
                    clock.advance(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
                }
                Err(error) => outcome
                    .failures
                    .push(format!("`advance` `{advance}`: {error}")),
            }
        }
        if step.run.is_some() {
            let (failures, actual) = run_step(&connector, dir, step, &store, &clock).await;
            outcome.failures = failures;
            if args.update && !outcome.failures.is_empty() {
                update(&mut file.steps[index], &actual);
                changed = true;
            }
        }
        steps.push(outcome);
    }
    if changed {
        let mut updated = serde_json::to_string_pretty(&file).unwrap_or_default();
        updated.push('\n');
        if let Err(error) = fs_err::write(path, updated) {
            return Some(invalid(path, format!("cannot update: {error}")));
        }
    }
    Some(FileOutcome {
        path: path.to_owned(),
        steps,
        invalid: None,
    })
}

/// The 1-based line and column of each of the first `count` steps, in one pass over the text:
/// steps follow each other, so their offsets increase, and the line and the column at one step
/// are carried to the next. Counting from the start of the text (or of the line: a file written
/// on one line) for each step made a long test file quadratic.
fn step_positions(text: &str, map: &SourceMap, path: &Path, count: usize) -> Vec<(usize, usize)> {
    let (mut offset, mut line, mut column) = (0, 1, 1);
    (0..count)
        .map(|index| {
            let pointer = JsonPointer::root().field("steps").index(index);
            let Some(span) = map.span(&Location::new(path, pointer)) else {
                return (1, 1);
            };
            let target = span.start.min(text.len());
            if target < offset {
                (offset, line, column) = (0, 1, 1);
            }
            let between = &text[offset..target];
            match between.rfind('\n') {
                Some(last) => {
                    line += between.matches('\n').count();
                    column = between[last + 1..].chars().count() + 1;
                }
                None => column += between.chars().count(),
            }
            offset = target;
            (line, column)
        })
        .collect()
}

/// Checks a test file (`cassette`: a cassette) for `engine validate`: `None` when it decodes,
/// else what is wrong and the byte range where.
pub(crate) fn check_text(
    text: &str,
    cassette: bool,
) -> Option<(String, Option<engine_spec::Span>)> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            let source = engine_spec::SourceFile::new("", text.to_owned());
            let offset = source.offset(engine_spec::Position {
                line: error.line(),
                column: error.column(),
            });
            return Some((
                format!("invalid JSON: {error}"),
                Some(engine_spec::Span {
                    start: offset,
                    end: (offset + 1).min(text.len()),
                }),
            ));
        }
    };
    let error = if cassette {
        serde_path_to_error::deserialize::<_, Cassette>(&value).err()?
    } else {
        serde_path_to_error::deserialize::<_, TestFile>(&value).err()?
    };
    let pointer = JsonPointer::of_path(error.path());
    let message = error.inner().to_string();
    let hint = suggestion(&message);
    let span = SourceMap::new(text).span(&Location::new("", pointer));
    Some((format!("{message}{hint}"), span))
}

/// Parses a test file, naming the line, column and field of the first problem.
fn parse(text: &str) -> Result<TestFile, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))?;
    serde_path_to_error::deserialize(&value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let hint = suggestion(&message);
        format!("at `{path}`: {message}{hint}")
    })
}

/// "did you mean" for serde's message "unknown field \`x\`, expected one of \`a\`, \`b\`".
fn suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return String::new();
    };
    let Some((field, expected)) = rest.split_once("`, expected ") else {
        return String::new();
    };
    let candidates: Vec<&str> = expected
        .split('`')
        .enumerate()
        .filter_map(|(index, part)| (index % 2 == 1).then_some(part))
        .collect();
    engine_spec::suggest::hint(field, candidates)
        .map(|hint| format!("; {hint}"))
        .unwrap_or_default()
}

/// What a run did, for `--update`.
#[derive(Debug, Default)]
struct Actual {
    exit: Option<ExitClass>,
    output: Value,
}

/// Runs one step's resource against its scripted exchanges and checks its expectations.
async fn run_step(
    connector: &Connector,
    dir: &Path,
    step: &file::Step,
    store: &MemoryStore,
    clock: &ManualClock,
) -> (Vec<String>, Actual) {
    let Some(run) = &step.run else {
        return (Vec::new(), Actual::default());
    };
    let mut failures = Vec::new();
    let script = match resolve(&step.exchanges, dir) {
        Ok(script) => script,
        Err(message) => return (vec![message], Actual::default()),
    };
    let before: State = store.get("i").unwrap_or_default();
    let values: BTreeMap<String, String> = before
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
        .collect();
    let transport = Arc::new(ReplayTransport::new(script, Placeholders::new(values)));
    // A test proves the lifecycle as the platform ran it: a hook or converter the engine does
    // not run, or a lifecycle resource it would skip, fails the test (exit 3, nothing sent).
    let engine = match EngineBuilder::new()
        .clock(Arc::new(clock.clone()))
        .transport(transport.clone())
        .strict(true)
        .build()
    {
        Ok(engine) => engine,
        Err(error) => return (vec![error.to_string()], Actual::default()),
    };
    // A multipart input's `@FILE` is read here, relative to the test file, as `engine run`
    // reads it (the runtime reads no file).
    let given: Vec<(String, String)> = run
        .params
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let (params, files) = match crate::run::split_files(connector, &run.resource, &given, Some(dir))
    {
        Ok(split) => split,
        Err(problem) => return (vec![problem.title()], Actual::default()),
    };
    let inputs = Inputs {
        params,
        headers: run
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        body: run.body.clone(),
        body_text: run.body.as_ref().map(|body| match body {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }),
        files,
    };
    let request = RunRequest {
        connector,
        selector: &run.resource,
        inputs: &inputs,
        instance: "i",
    };
    let now_before = engine_runtime::Clock::now_ms(clock);
    let result = engine.run(&request, store, &NoObserver).await;
    let (exit, output, error) = match result {
        Ok(output) => (ExitClass::Ok, output.body.into_value(), None),
        Err(error) => (class_of(&error), Value::Null, Some(error.to_string())),
    };
    let (transport_failures, unsent) = transport.finish();
    for failure in transport_failures {
        failures.push(match failure {
            Failure::Unexpected { actual } => {
                format!("a request the test does not expect was sent:\n    {actual}")
            }
            Failure::Mismatch {
                index,
                expected,
                actual,
                differences,
            } => format!(
                "exchange {} is not the expected request:\n    expected: {expected}\n    sent:     {actual}\n    {}",
                index + 1,
                differences.join("\n    ")
            ),
        });
    }
    for expected in unsent {
        failures.push(format!("an expected request was not sent:\n    {expected}"));
    }
    let expect = step.expect.clone().unwrap_or_default();
    let wanted = expect.exit.unwrap_or(ExitClass::Ok);
    if wanted != exit {
        let why = error.map(|error| format!(": {error}")).unwrap_or_default();
        failures.push(format!(
            "expected exit `{}`, got `{}`{why}",
            wanted.as_str(),
            exit.as_str()
        ));
    }
    for check in &expect.output {
        if let Some(failure) = check_output(check, &output) {
            failures.push(failure);
        }
    }
    let after: State = store.get("i").unwrap_or_default();
    let now = engine_runtime::Clock::now_ms(clock);
    for (key, check) in &expect.instance {
        if let Some(failure) = check_key(key, check, &before, &after, now.max(now_before)) {
            failures.push(failure);
        }
    }
    (
        failures,
        Actual {
            exit: Some(exit),
            output,
        },
    )
}

/// The exit class of a failed run: the exit code `engine run` would give.
fn class_of(error: &engine_runtime::RunError) -> ExitClass {
    match crate::run::exit_of(error) {
        Exit::VendorError => ExitClass::VendorError,
        Exit::AuthFailed => ExitClass::AuthFailed,
        Exit::Transport => ExitClass::Transport,
        Exit::Success | Exit::Usage | Exit::Invalid => ExitClass::Invalid,
    }
}

/// The step's exchanges, cassette references read.
fn resolve(specs: &[ExchangeSpec], dir: &Path) -> Result<Vec<Exchange>, String> {
    let mut cassettes: BTreeMap<String, Cassette> = BTreeMap::new();
    specs
        .iter()
        .map(|spec| match spec {
            ExchangeSpec::Inline(exchange) => Ok((**exchange).clone()),
            ExchangeSpec::FromCassette(CassetteRef {
                cassette,
                run,
                exchange,
            }) => {
                if !cassettes.contains_key(cassette) {
                    let text = crate::input::read_text(&dir.join(cassette))
                        .map_err(|error| error.to_string())?;
                    let parsed: Cassette = serde_json::from_str(&text)
                        .map_err(|error| format!("cassette `{cassette}`: {error}"))?;
                    cassettes.insert(cassette.clone(), parsed);
                }
                let recorded = cassettes[cassette]
                    .runs
                    .get(*run)
                    .and_then(|recorded| recorded.exchanges.get(*exchange))
                    .ok_or_else(|| {
                        format!("cassette `{cassette}` has no exchange {exchange} in run {run}")
                    })?;
                Ok(Exchange {
                    request: recorded.request.clone(),
                    response: recorded.response.clone(),
                })
            }
        })
        .collect()
}

fn check_output(check: &OutputCheck, output: &Value) -> Option<String> {
    let path = match engine_spec::jsonpath::JsonPath::compile(&check.path) {
        Ok(path) => path,
        Err(error) => return Some(format!("output `{}`: {error}", check.path)),
    };
    let found = path.select(output);
    if let Some(exists) = check.exists
        && exists != found.is_some()
    {
        return Some(format!(
            "output `{}`: expected it to {}exist",
            check.path,
            if exists { "" } else { "not " }
        ));
    }
    if let Some(equals) = &check.equals
        && found.as_ref() != Some(equals)
    {
        return Some(format!(
            "output `{}`: expected `{equals}`, got `{}`",
            check.path,
            found.map_or_else(|| "nothing".to_owned(), |value| value.to_string())
        ));
    }
    if let Some(pattern) = &check.matches {
        let text = match &found {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        match regex::Regex::new(pattern) {
            Ok(regex) if regex.is_match(&text) => {}
            Ok(_) => {
                return Some(format!(
                    "output `{}`: `{text}` does not match `{pattern}`",
                    check.path
                ));
            }
            Err(error) => {
                return Some(format!(
                    "output `{}`: invalid regex `{pattern}`: {error}",
                    check.path
                ));
            }
        }
    }
    if let Some(count) = check.count {
        let got = match &found {
            Some(Value::Array(items)) => items.len(),
            Some(_) => 1,
            None => 0,
        };
        if got != count {
            return Some(format!(
                "output `{}`: expected {count} values, got {got}",
                check.path
            ));
        }
    }
    None
}

fn check_key(
    key: &str,
    check: &KeyCheck,
    before: &State,
    after: &State,
    now_ms: u64,
) -> Option<String> {
    // Every value here is the test's own (its instance, its scripted answers): shown as it is,
    // secrets too, so that a failure says which fake token went where.
    let shown = |value: Option<&Value>| match value {
        None => "nothing".to_owned(),
        Some(value) => format!("`{value}`"),
    };
    let (old, new) = (before.get(key), after.get(key));
    let failed = match check {
        KeyCheck::State(KeyState::Present) => new.is_none(),
        KeyCheck::State(KeyState::Absent) => new.is_some(),
        KeyCheck::State(KeyState::Changed) => old == new,
        KeyCheck::State(KeyState::Unchanged) => old != new,
        KeyCheck::Equals { equals } => {
            let wanted = match equals {
                Value::String(text) if text == "<now>" => Value::String(now_ms.to_string()),
                other => other.clone(),
            };
            new != Some(&wanted)
        }
    };
    failed.then(|| {
        let wanted = match check {
            KeyCheck::State(state) => format!("{state:?}").to_lowercase(),
            KeyCheck::Equals { equals } => format!("equal to `{equals}`"),
        };
        format!(
            "instance `{key}`: expected {wanted}; it was {} and is {}",
            shown(old),
            shown(new)
        )
    })
}

/// `--update`: the step's expectations rewritten from what the run did.
fn update(step: &mut file::Step, actual: &Actual) {
    let expect = step.expect.get_or_insert_with(Expect::default);
    if let Some(exit) = actual.exit {
        expect.exit = (exit != ExitClass::Ok).then_some(exit);
    }
    for check in &mut expect.output {
        if check.equals.is_some()
            && let Ok(path) = engine_spec::jsonpath::JsonPath::compile(&check.path)
        {
            check.equals = path.select(&actual.output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_get_a_did_you_mean() {
        let error = parse(r#"{"connector": "c.json", "stpes": []}"#).unwrap_err();
        assert!(error.contains("did you mean `steps`?"), "{error}");
    }

    #[test]
    fn step_positions_agree_with_the_source_file() {
        let text = "{\"steps\": [\n  {\"advance\": \"1h\"}, {\"name\": \"é\"},\n\n    {}\n]}";
        let map = SourceMap::new(text);
        let path = Path::new("t.test.json");
        let source = engine_spec::SourceFile::new(path, text);
        let expected: Vec<(usize, usize)> = (0..3)
            .map(|index| {
                let pointer = JsonPointer::root().field("steps").index(index);
                let span = map.span(&Location::new(path, pointer)).unwrap();
                let position = source.position(span.start);
                (position.line, position.column)
            })
            .collect();
        assert_eq!(expected, [(2, 3), (2, 22), (4, 5)]);
        assert_eq!(step_positions(text, &map, path, 3), expected);
        // On one line, as a generated file often is.
        let text = r#"{"steps": [{}, {"name": "é"}, {}]}"#;
        let map = SourceMap::new(text);
        assert_eq!(
            step_positions(text, &map, path, 3),
            [(1, 12), (1, 16), (1, 31)]
        );
    }
}

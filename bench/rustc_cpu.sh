#!/usr/bin/env bash
# The CPU time of each crate's compile (docs/BENCHMARKS.md, "Cold build and the quick start"):
# a RUSTC_WRAPPER that appends one line per rustc run to RUSTC_CPU_LOG (default
# /tmp/rustc-cpu.log): the crate's name, user and system CPU seconds, and wall seconds. CPU time
# moves less than wall time when other work shares the machine; two builds compared side by side
# see the same load.
#
# Usage: RUSTC_WRAPPER="$PWD/bench/rustc_cpu.sh" RUSTC_CPU_LOG=/tmp/a.log \
#          CARGO_TARGET_DIR=/tmp/empty cargo build --release --locked -p engine-cli -p engine-emulator
#        awk '{ cpu += $2 + $3 } END { print cpu " s" }' /tmp/a.log
rustc="$1"
shift
name=""
previous=""
for argument in "$@"; do
  [ "$previous" = "--crate-name" ] && name="$argument"
  previous="$argument"
done
exec /usr/bin/time -a -o "${RUSTC_CPU_LOG:-/tmp/rustc-cpu.log}" -f "$name %U %S %e" "$rustc" "$@"

//! Reading `strace -f -y` output: which paths a traced process wrote, created, renamed or
//! deleted. Shared by the firmware's privacy test and the fleet's model push test.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The syscalls traced: every way of writing, creating, renaming or deleting a path.
pub const TRACED_CALLS: &str = "trace=open,openat,openat2,creat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,mkdir,mkdirat,unlink,unlinkat,rmdir,truncate";

/// `strace` arguments that follow children, resolve fds to paths and write to `trace`; the
/// program and its arguments come after.
pub fn strace_args(trace: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-f", "-qq", "-y", "-s", "1024", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(trace.into());
    args.extend(["-e".into(), TRACED_CALLS.into()]);
    args
}

/// The lines of `trace` that write a path outside `allowed`, and how many writes were inside.
pub fn writes_outside(trace: &str, allowed: &Path) -> (Vec<String>, usize) {
    let mut outside = Vec::new();
    let mut inside = 0;
    for line in trace.lines() {
        for path in written_paths(line) {
            if Path::new(&path).starts_with(allowed) {
                inside += 1;
            } else {
                outside.push(line.to_string());
            }
        }
    }
    (outside, inside)
}

/// The paths named by a syscall's arguments as `strace -y` prints them: quoted names, each
/// resolved against the directory fd before it (`4</state/outbox>, "ledger.tmp"`); a
/// relative name without one (`AT_FDCWD`) is kept relative, which no state directory holds.
pub fn arg_paths(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    let mut out = Vec::new();
    let mut base: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                let mut j = i + 1;
                let mut text = String::new();
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                out.push(match (&base, text.starts_with('/')) {
                    (Some(dir), false) => format!("{dir}/{text}"),
                    _ => text,
                });
                i = j + 1;
            }
            c if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_alphanumeric()) => {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                if chars.get(j) == Some(&'<') {
                    let end = chars[j..]
                        .iter()
                        .position(|&c| c == '>')
                        .map_or(chars.len(), |k| j + k);
                    base = Some(chars[j + 1..end].iter().collect());
                    i = end + 1;
                } else {
                    i = j;
                }
            }
            'A' if args[args.char_indices().nth(i).map_or(0, |(b, _)| b)..]
                .starts_with("AT_FDCWD") =>
            {
                base = None;
                i += "AT_FDCWD".len();
            }
            _ => i += 1,
        }
    }
    out
}

/// Paths that a traced syscall line writes, creates, renames or deletes. A call that failed
/// (`= -1 ENOENT ...`) wrote nothing; an unfinished one counts as a write.
pub fn written_paths(line: &str) -> Vec<String> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let failed = tokens.windows(2).any(|w| w == ["=", "-1"]);
    if failed {
        return Vec::new();
    }
    let call = line
        .split_once(' ')
        .map_or(line, |(_, rest)| rest)
        .trim_start();
    let name = call.split('(').next().unwrap_or("");
    let args = call.split_once('(').map_or("", |(_, a)| a);
    // The arguments only: strace -y also annotates the returned fd.
    let args = args.rsplit_once(") =").map_or(args, |(a, _)| a);
    match name {
        "open" | "openat" | "openat2" => {
            let writes = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"]
                .iter()
                .any(|f| args.contains(f));
            if writes {
                arg_paths(args).into_iter().take(1).collect()
            } else {
                Vec::new()
            }
        }
        "creat" | "mkdir" | "mkdirat" | "unlink" | "unlinkat" | "rmdir" | "truncate" => {
            arg_paths(args).into_iter().take(1).collect()
        }
        "rename" | "renameat" | "renameat2" | "link" | "linkat" | "symlink" | "symlinkat" => {
            arg_paths(args)
        }
        _ => Vec::new(),
    }
}

/// Every file under `dir`, to check what a traced run left behind.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

//! The machine a report ran on, read from Linux's `/proc` and the tools'
//! own version flags, so a figure can be judged against its hardware.

use std::process::Command;

/// One Markdown list describing the machine, the toolchain and the peers.
pub fn describe() -> String {
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|kib| kib.trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let lines = [
        format!(
            "- date: {}",
            first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        ),
        format!("- CPU: {cpu}, {cores} cores available"),
        format!("- memory: {memory}; Linux {kernel}"),
        format!("- load average at start: {}", load_average()),
        format!("- {}", first_line("rustc", &["--version"])),
        format!("- {}", first_line(e2e::MOSQUITTO, &["-h"])),
    ];
    lines.join("\n") + "\n"
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

/// The value of the first `key: value` line of a `/proc` file.
fn proc_field(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// The first line a program prints (stdout, else stderr), or that it is
/// missing.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(_) => format!("{program}: not installed"),
    }
}

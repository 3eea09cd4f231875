//! hello-p2: a WASI preview2 command component. Prints a greeting, its
//! arguments and its environment. `hello-p2 cat FILE` also prints FILE;
//! `hello-p2 exit N` exits with status N (a preview2 command can only report
//! success or failure, so the host sees 1 for any non-zero N).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();

    println!("Hello from a WASI preview2 component!");
    for (i, arg) in args.iter().enumerate().skip(1) {
        println!("arg[{i}]={arg}");
    }
    for (key, value) in std::env::vars() {
        println!("env {key}={value}");
    }

    match args.get(1).map(String::as_str) {
        Some("cat") => {
            let Some(path) = args.get(2) else {
                eprintln!("usage: hello-p2 cat FILE");
                return ExitCode::from(2);
            };
            match std::fs::read(path) {
                Ok(bytes) => {
                    let mut out = std::io::stdout().lock();
                    if let Err(err) = out.write_all(&bytes).and_then(|()| out.flush()) {
                        eprintln!("hello-p2: cat {path}: {err}");
                        return ExitCode::FAILURE;
                    }
                }
                Err(err) => {
                    eprintln!("hello-p2: cat {path}: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Some("exit") => {
            let code = args.get(2).and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
            std::io::stdout().flush().ok();
            std::process::exit(code);
        }
        _ => {}
    }
    ExitCode::SUCCESS
}

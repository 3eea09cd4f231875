//! echo-server: a WASI preview2 command component that uses `wasi:sockets`
//! through Rust's `std::net`.
//!
//! - `echo-server` listens on `0.0.0.0:$PORT` (default 7000), prints
//!   `listening on ADDR` and echoes every line back to the client. Clients
//!   are served one after another (wasm has no threads here).
//! - `echo-server connect HOST:PORT [TEXT]` connects, sends TEXT (default
//!   `hello`) as one line and prints the line it gets back.
//!
//! Errors go to stderr with exit status 1.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("connect") => match args.get(2) {
            Some(target) => connect(target, args.get(3).map_or("hello", String::as_str)),
            None => Err("usage: echo-server connect HOST:PORT [TEXT]".to_owned()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}; usage: echo-server [connect HOST:PORT [TEXT]]"
        )),
        None => serve(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("echo-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), String> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "7000".to_owned());
    let addr = format!("0.0.0.0:{port}");
    let listener =
        TcpListener::bind(&addr).map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    println!("listening on {local}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(error) = echo(stream) {
                    eprintln!("echo-server: connection ended: {error}");
                }
            }
            Err(error) => eprintln!("echo-server: accept failed: {error}"),
        }
    }
    Ok(())
}

/// Echoes lines until the client closes its side.
fn echo(stream: TcpStream) -> std::io::Result<()> {
    // `&TcpStream` reads and writes; `try_clone` is not available on WASI.
    let mut writer = &stream;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        writer.write_all(line.as_bytes())?;
        writer.flush()?;
        line.clear();
    }
    Ok(())
}

fn connect(target: &str, text: &str) -> Result<(), String> {
    let stream = TcpStream::connect(target)
        .map_err(|error| format!("cannot connect to {target}: {error}"))?;
    let mut writer = &stream;
    writeln!(writer, "{text}").map_err(|error| format!("cannot send to {target}: {error}"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|error| format!("cannot read from {target}: {error}"))?;
    print!("{reply}");
    Ok(())
}

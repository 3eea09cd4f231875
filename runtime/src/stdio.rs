//! Where a sandbox's standard streams lead, chosen by whoever starts it:
//! the host process's own, nothing, bytes in memory, a file, any async
//! reader or writer (a pipe, a FIFO, a socket), or an in-memory ring that
//! keeps the newest output.
//!
//! Output never blocks a runtime worker and never grows without bound: a
//! file or writer is written by a task of its own through a bounded buffer
//! ([`OUTPUT_BUFFER`]), so a guest whose sink is slow waits (asynchronously)
//! for room instead of piling output up in host memory; a ring drops the
//! oldest bytes instead.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of a guest's output buffered on their way to a file or writer.
pub const OUTPUT_BUFFER: usize = 64 << 10;

/// Where the guest's standard input comes from.
#[derive(Default)]
pub enum Stdin {
    /// The host process's stdin.
    Inherit,
    /// An empty stream.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// Whatever this reader yields (a pipe, a FIFO), then end of file.
    Reader(Box<dyn AsyncRead + Send + Sync + Unpin>),
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stdin::Inherit => f.write_str("Inherit"),
            Stdin::Null => f.write_str("Null"),
            Stdin::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Stdin::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// Where one of the guest's output streams goes.
#[derive(Default)]
pub enum Output {
    /// The host process's stdout or stderr.
    Inherit,
    /// Discarded.
    #[default]
    Null,
    /// Appended to this file, from a task of its own.
    File(std::fs::File),
    /// Written to this writer (a pipe, a FIFO, a socket), from a task of
    /// its own.
    Writer(Box<dyn AsyncWrite + Send + Sync + Unpin>),
    /// Kept in this ring, which holds the newest output.
    Ring(OutputRing),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Inherit => f.write_str("Inherit"),
            Output::Null => f.write_str("Null"),
            Output::File(file) => write!(f, "File({file:?})"),
            Output::Writer(_) => f.write_str("Writer"),
            Output::Ring(ring) => write!(f, "Ring({} bytes)", ring.capacity),
        }
    }
}

impl Output {
    /// Opens the FIFO at `path` for writing (its reader must have opened
    /// it already, as containerd does), without blocking.
    #[cfg(unix)]
    pub fn fifo(path: &std::path::Path) -> std::io::Result<Output> {
        let sender = tokio::net::unix::pipe::OpenOptions::new().open_sender(path)?;
        Ok(Output::Writer(Box::new(sender)))
    }

    /// A sink that every instance of a server can share.
    pub(crate) fn into_shared(self) -> SharedOutput {
        SharedOutput(match self {
            Output::Inherit => Sink::Inherit,
            Output::Null => Sink::Null,
            Output::File(file) => Sink::Async(Arc::new(AsyncStdoutStream::new(
                OUTPUT_BUFFER,
                tokio::fs::File::from_std(file),
            ))),
            Output::Writer(writer) => {
                Sink::Async(Arc::new(AsyncStdoutStream::new(OUTPUT_BUFFER, writer)))
            }
            Output::Ring(ring) => Sink::Ring(ring),
        })
    }
}

impl Stdin {
    /// Opens the FIFO at `path` for reading, without blocking.
    #[cfg(unix)]
    pub fn fifo(path: &std::path::Path) -> std::io::Result<Stdin> {
        let receiver = tokio::net::unix::pipe::OpenOptions::new().open_receiver(path)?;
        Ok(Stdin::Reader(Box::new(receiver)))
    }

    /// Gives the guest this stdin.
    pub(crate) fn grant(self, builder: &mut WasiCtxBuilder) {
        match self {
            Stdin::Inherit => {
                builder.inherit_stdin();
            }
            Stdin::Null => {}
            Stdin::Bytes(bytes) => {
                builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes));
            }
            Stdin::Reader(reader) => {
                builder.stdin(AsyncStdinStream::new(reader));
            }
        }
    }
}

/// Which output stream.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// An [`Output`] made shareable: cloned into every instance that writes to
/// the same destination.
#[derive(Clone)]
pub(crate) struct SharedOutput(Sink);

#[derive(Clone)]
enum Sink {
    Inherit,
    Null,
    Async(Arc<AsyncStdoutStream>),
    Ring(OutputRing),
}

impl SharedOutput {
    /// Gives the guest this output as `stream`.
    pub(crate) fn grant(&self, builder: &mut WasiCtxBuilder, stream: Stream) {
        fn set(builder: &mut WasiCtxBuilder, stream: Stream, sink: impl StdoutStream + 'static) {
            match stream {
                Stream::Stdout => {
                    builder.stdout(sink);
                }
                Stream::Stderr => {
                    builder.stderr(sink);
                }
            }
        }
        match (&self.0, stream) {
            (Sink::Inherit, Stream::Stdout) => {
                builder.inherit_stdout();
            }
            (Sink::Inherit, Stream::Stderr) => {
                builder.inherit_stderr();
            }
            (Sink::Null, _) => {}
            (Sink::Async(sink), _) => set(builder, stream, SharedAsync(sink.clone())),
            (Sink::Ring(ring), _) => set(builder, stream, ring.clone()),
        }
    }
}

/// One of the views of a shared async sink.
struct SharedAsync(Arc<AsyncStdoutStream>);

impl IsTerminal for SharedAsync {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SharedAsync {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.0.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }
}

/// An in-memory ring of output: keeps the newest `capacity` bytes and
/// drops older ones, so a guest can never make it grow. Clones share the
/// ring.
#[derive(Clone)]
pub struct OutputRing {
    capacity: usize,
    buffer: Arc<Mutex<RingBuffer>>,
}

#[derive(Default)]
struct RingBuffer {
    bytes: VecDeque<u8>,
    /// Bytes ever written, dropped ones included.
    written: u64,
}

impl OutputRing {
    /// A ring holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        OutputRing {
            capacity,
            buffer: Arc::new(Mutex::new(RingBuffer::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RingBuffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes held now: the newest output, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let buffer = self.lock();
        buffer.bytes.iter().copied().collect()
    }

    /// Bytes ever written to the ring, including those since dropped.
    pub fn total_written(&self) -> u64 {
        self.lock().written
    }

    fn push(&self, data: &[u8]) {
        let mut buffer = self.lock();
        buffer.written = buffer.written.saturating_add(data.len() as u64);
        let keep = data.len().min(self.capacity);
        let data = &data[data.len() - keep..];
        let overflow = (buffer.bytes.len() + data.len()).saturating_sub(self.capacity);
        buffer.bytes.drain(..overflow);
        buffer.bytes.extend(data);
    }
}

impl IsTerminal for OutputRing {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputRing {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputRing {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: the oldest bytes make way.
        Ok(OUTPUT_BUFFER)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputRing {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputRing {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let ring = OutputRing::new(8);
        ring.push(b"hello ");
        ring.push(b"world");
        assert_eq!(ring.contents(), b"lo world");
        ring.push(b"0123456789abc");
        assert_eq!(ring.contents(), b"56789abc");
        assert_eq!(ring.total_written(), 24);
    }
}

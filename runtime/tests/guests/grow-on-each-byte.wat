;; A guest that grows its memory to 1 MiB (16 pages), then by 1 MiB more for
;; each byte it reads from stdin (trapping when a growth is refused, as a C
;; program whose malloc fails aborts), and exits 0 at the end of stdin.
;; Used by the runtime's and the shim's tests of limits changed live.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 15)))
    (loop $l
      ;; one iovec at 0: a one-byte buffer at 16; bytes read at 8
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 1))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8))) (then return))
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $l))))

;; trap: _start calls $outer, which calls $inner, which executes `unreachable`.
;; Shows how a trap is reported, with a backtrace naming the functions.
(module
  (func $inner
    unreachable)
  (func $outer
    call $inner)
  (func $_start (export "_start")
    call $outer))

;; stackbomb: recurses without end. Shows stack exhaustion being caught as a trap
;; instead of crashing the host.
(module
  (func $recurse (param $depth i32) (result i32)
    (i32.add
      (call $recurse (i32.add (local.get $depth) (i32.const 1)))
      (i32.const 1)))
  (func $_start (export "_start")
    (drop (call $recurse (i32.const 0)))))

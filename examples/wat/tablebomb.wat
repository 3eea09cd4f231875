;; tablebomb: grows a funcref table by 100000 elements at a time until table.grow
;; fails, then traps. Shows table growth being bounded like memory.
(module
  (table $t 1 funcref)
  (func (export "_start")
    (loop $grow
      (br_if $grow
        (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))))
    unreachable))

;; add: a library-style module. Shows invoking a named export with FILE#export,
;; e.g. `berth run examples/wat/add.wat#add 2 3` calls add(2, 3).
(module
  (func (export "add") (param $a i32) (param $b i32) (result i32)
    (i32.add (local.get $a) (local.get $b)))
  (func (export "answer") (result i32)
    i32.const 42)
  (func (export "_start")))

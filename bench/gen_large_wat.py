#!/usr/bin/env python3
"""Emit a large WASI command module as WebAssembly text: N functions with
some arithmetic each, so compiling it takes a noticeable time. Used by the
compile-cache benchmark."""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
out = ['(module', '  (memory (export "memory") 1)']
for i in range(n):
    body = []
    for j in range(40):
        body.append(f'    local.get $x i32.const {i * 40 + j} i32.add i32.const {j + 3} i32.mul local.set $x')
    out.append(f'  (func $f{i} (param $x i32) (result i32)\n' + '\n'.join(body) + '\n    local.get $x)')
calls = '\n'.join(f'    i32.const {i} call $f{i} drop' for i in range(n))
out.append(f'  (func (export "_start")\n{calls})')
out.append(')')
print('\n'.join(out))

;; Test guest: exports memory and cabi_realloc but neither the seed's handler nor the draft's
;; handle: it matches no world and is refused, naming what is missing.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024)))

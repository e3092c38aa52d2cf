;; Test guest: imports a function wasi_snapshot_preview1 does not have; refused at load.
(module
  (import "wasi_snapshot_preview1" "fd_frobnicate" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32) (i32.const 0))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param i32 i32) (result i32)
    (i32.const 0))
)

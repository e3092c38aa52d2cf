;; Test guest (messaging-core): handle replaces the message's data with a list of 2^31 - 1 bytes
;; at address 0, far past its memory: the guest traps, the host copies nothing.
(module
  (import "wasi:messaging/types@0.2.0-draft" "[method]message.set-data"
    (func $set_data (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "wasi:messaging/incoming-handler@0.2.0-draft#handle") (param $m i32) (result i32)
    (call $set_data (local.get $m) (i32.const 0) (i32.const 0x7fffffff))
    (i32.const 0)))

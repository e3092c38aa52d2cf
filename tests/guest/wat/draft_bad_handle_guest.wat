;; Test guest (messaging-core): handle asks for the data of message handle 77, which the host
;; never created: the guest traps, the host carries on.
(module
  (import "wasi:messaging/types@0.2.0-draft" "[method]message.data"
    (func $data (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "wasi:messaging/incoming-handler@0.2.0-draft#handle") (param $m i32) (result i32)
    (call $data (i32.const 77) (i32.const 16))
    (i32.const 0)))

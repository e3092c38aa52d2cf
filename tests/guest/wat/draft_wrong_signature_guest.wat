;; Test guest (messaging-core): imports producer.send with the seed world's signature (six
;; parameters) instead of the draft's five: refused at load, naming the import.
(module
  (import "wasi:messaging/producer@0.2.0-draft" "send"
    (func $send (param i32 i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "wasi:messaging/incoming-handler@0.2.0-draft#handle") (param $m i32) (result i32)
    (i32.const 0)))

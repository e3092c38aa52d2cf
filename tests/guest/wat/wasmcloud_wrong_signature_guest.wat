;; Test guest (wasmcloud-messaging) that imports consumer.publish with a wrong signature (the
;; broker-message passed as two values): refused at load, naming the import and the signature.
(module
  (import "wasmcloud:messaging/consumer@0.2.0" "publish" (func $publish (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "wasmcloud:messaging/handler@0.2.0#handle-message")
    (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.const 2048)))

;; Test guest (wasmcloud-messaging) whose handle-message takes the broker-message as one value:
;; refused at load, naming the export and the signature the canonical ABI gives it.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "wasmcloud:messaging/handler@0.2.0#handle-message") (param i32) (result i32)
    (i32.const 2048)))

;; Test guest (wasmcloud-messaging) that misuses the canonical ABI, by the first byte of the body:
;;   h: publish with a subject of 2^31 - 1 bytes at 0, far past its memory
;;   p: publish with a return area past the end of its memory
;;   d: publish with reply-to's option discriminant 7
;;   r: request with a body of 2^31 - 1 bytes
;;   x: handle-message returns a result pointer past the end of its memory
;;   e: handle-message returns a result with discriminant 5
;; anything else: handle-message returns ok. Each misuse traps this guest only.
(module
  (import "wasmcloud:messaging/consumer@0.2.0" "publish"
    (func $publish (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "wasmcloud:messaging/consumer@0.2.0" "request"
    (func $request (param i32 i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 16) "wc.out")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.and (i32.add (i32.add (global.get $bump) (local.get 3)) (i32.const 7))
                               (i32.const -8)))
    (local.get $p))
  (func (export "wasmcloud:messaging/handler@0.2.0#handle-message")
    (param $s i32) (param $sl i32) (param $b i32) (param $bl i32)
    (param $rt i32) (param $rp i32) (param $rl i32) (result i32)
    (local $op i32)
    (if (local.get $bl) (then (local.set $op (i32.load8_u (local.get $b)))))
    (if (i32.eq (local.get $op) (i32.const 0x68))  ;; h
      (then (call $publish (i32.const 0) (i32.const 0x7fffffff) (i32.const 16) (i32.const 6)
                           (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1024))))
    (if (i32.eq (local.get $op) (i32.const 0x70))  ;; p
      (then (call $publish (i32.const 16) (i32.const 6) (i32.const 16) (i32.const 6)
                           (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0xfffffff0))))
    (if (i32.eq (local.get $op) (i32.const 0x64))  ;; d
      (then (call $publish (i32.const 16) (i32.const 6) (i32.const 16) (i32.const 6)
                           (i32.const 7) (i32.const 16) (i32.const 6) (i32.const 1024))))
    (if (i32.eq (local.get $op) (i32.const 0x72))  ;; r
      (then (call $request (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 0x7fffffff)
                           (i32.const 100) (i32.const 1024))))
    (if (i32.eq (local.get $op) (i32.const 0x78))  ;; x
      (then (return (i32.const 0x7ffffff0))))
    (if (i32.eq (local.get $op) (i32.const 0x65))  ;; e
      (then (i32.store8 (i32.const 2048) (i32.const 5)) (return (i32.const 2048))))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048)))

;; Test guest: the core module of a hand-made component (component_test.cc) that imports WASI 0.2
;; stdout through lowered functions. Its handler does what the first byte of the first message
;; says: 'w' writes "hello p2\n" to stdout and drops the stream; 'h' takes stdout handles without
;; dropping them (past the handle table's cap); 'd' drops a handle never issued; 'o' writes from
;; outside its memory; 't' drops the stream twice.
(module
  (import "host" "get-stdout" (func $get_stdout (result i32)))
  (import "host" "write" (func $write (param i32 i32 i32 i32)))
  (import "host" "drop" (func $drop (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get 3)))
    (local.get $p))
  ;; configure() -> ok({ channels: ["p2.in"], extensions: none })
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\05\00\00\00")
  (data (i32.const 1200) "p2.in")
  (data (i32.const 1300) "hello p2\n")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler")
        (param $list i32) (param $len i32) (result i32)
    (local $op i32) (local $s i32) (local $i i32)
    (global.set $heap (i32.const 32768))
    ;; message 0: data.ptr at +0 of the first message record
    (local.set $op (i32.load8_u (i32.load (local.get $list))))
    (if (i32.eq (local.get $op) (i32.const 119)) ;; 'w'
      (then
        (local.set $s (call $get_stdout))
        (call $write (local.get $s) (i32.const 1300) (i32.const 9) (i32.const 2100))
        (call $drop (local.get $s))))
    (if (i32.eq (local.get $op) (i32.const 104)) ;; 'h'
      (then
        (loop $more
          (drop (call $get_stdout))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $more (i32.lt_u (local.get $i) (i32.const 1000))))))
    (if (i32.eq (local.get $op) (i32.const 100)) ;; 'd'
      (then (call $drop (i32.const 77))))
    (if (i32.eq (local.get $op) (i32.const 111)) ;; 'o'
      (then
        (local.set $s (call $get_stdout))
        (call $write (local.get $s) (i32.const 65530) (i32.const 100) (i32.const 2100))))
    (if (i32.eq (local.get $op) (i32.const 116)) ;; 't'
      (then
        (local.set $s (call $get_stdout))
        (call $drop (local.get $s))
        (call $drop (local.get $s))))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048)))

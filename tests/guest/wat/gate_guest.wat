;; Test guest (issue 18 item 4): configure takes a message from "gate" if one is there, and then
;; waits in subscribe-receive (no timeout) on "never"; the handler traps, so every batch makes the
;; host instantiate and configure it again.
(module
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[static]client.connect" (func $connect (param i32 i32 i32)))
  (import "wasi:messaging/consumer@0.2.0-draft" "subscribe-try-receive" (func $try_receive (param i32 i32 i32 i32 i32)))
  (import "wasi:messaging/consumer@0.2.0-draft" "subscribe-receive" (func $receive (param i32 i32 i32 i32)))
  (memory (export "memory") 2)
  ;; Bump allocator over [65536, ...): the handler resets it, so each batch gets a fresh arena.
  (global $heap (mut i32) (i32.const 65536))
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (drop (memory.grow
                (i32.add (i32.shr_u (i32.sub (local.get $end)
                                             (i32.mul (memory.size) (i32.const 65536)))
                                    (i32.const 16))
                         (i32.const 1))))))
    (global.set $heap (local.get $end))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))
  ;; configure() -> ok({ channels: ["guest.in"], extensions: none }), built in static data.
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  (data (i32.const 1300) "never")
  (data (i32.const 1320) "gate")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (local $client i32)
    (call $connect (i32.const 1300) (i32.const 0) (i32.const 2064))
    (local.set $client (i32.load (i32.const 2068)))
    (call $try_receive (local.get $client) (i32.const 1320) (i32.const 4) (i32.const 0)
                       (i32.const 2144))
    (if (i32.and (i32.eqz (i32.load8_u (i32.const 2144))) (i32.load8_u (i32.const 2148)))
      (then (call $receive (local.get $client) (i32.const 1300) (i32.const 5) (i32.const 2160))))
    (i32.const 1024))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    unreachable)
)

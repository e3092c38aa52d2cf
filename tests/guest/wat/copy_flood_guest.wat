;; Test guest (issue 18 item 7): host calls that make the host copy much guest data for a few
;; instructions. The handler builds a guest-configuration of 1,024 channel names that all point
;; at the same 2 KiB of its memory (2 MiB to copy, within the per-call lift limit) and passes it
;; to update-guest-configuration (refused without a broker: an err result, no trap) 100 times,
;; dropping each error: about 200 MB copied by the host in some 12,000 interpreter steps. With a
;; batch of one message it does it once.
(module
  (import "wasi:messaging/consumer@0.2.0-draft" "update-guest-configuration" (func $update (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[resource-drop]error" (func $drop_error (param i32)))
  (memory (export "memory") 16)
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (i32.const 4096))
  ;; configure() -> ok({ channels: ["guest.in"], extensions: none }), built in static data.
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    (local $i i32) (local $calls i32)
    ;; list<string> at 8192: 1,024 times (65536, 2048).
    (block $built
      (loop $each
        (br_if $built (i32.eq (local.get $i) (i32.const 1024)))
        (i32.store (i32.add (i32.const 8192) (i32.shl (local.get $i) (i32.const 3)))
                   (i32.const 65536))
        (i32.store (i32.add (i32.const 8196) (i32.shl (local.get $i) (i32.const 3)))
                   (i32.const 2048))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (local.set $calls (select (i32.const 1) (i32.const 100) (i32.eq (local.get $len) (i32.const 1))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $each
        (br_if $done (i32.eq (local.get $i) (local.get $calls)))
        (call $update (i32.const 8192) (i32.const 1024) (i32.const 0) (i32.const 0) (i32.const 0)
                      (i32.const 4000))
        ;; err (the guest cannot re-subscribe without a broker): drop the error handle.
        (if (i32.eqz (i32.load8_u (i32.const 4000))) (then unreachable))
        (call $drop_error (i32.load (i32.const 4004)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
)

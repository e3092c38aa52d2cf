;; Test guest: exercises the consumer and resource imports in handler. It connects, provokes an
;; error (send to ""), drops the error, reads error.trace and sends the trace to "guest.trace";
;; takes one message from "side" with subscribe-try-receive and completes it; subscribes itself
;; to "guest.in" and "guest.more" with update-guest-configuration; drops its client. Any
;; unexpected result traps.
(module
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[static]client.connect" (func $connect (param i32 i32 i32)))
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[static]error.trace" (func $trace (param i32)))
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[resource-drop]client" (func $drop_client (param i32)))
  (import "wasi:messaging/messaging-types@0.2.0-draft" "[resource-drop]error" (func $drop_error (param i32)))
  (import "wasi:messaging/producer@0.2.0-draft" "send" (func $send (param i32 i32 i32 i32 i32 i32)))
  (import "wasi:messaging/consumer@0.2.0-draft" "subscribe-try-receive" (func $try_receive (param i32 i32 i32 i32 i32)))
  (import "wasi:messaging/consumer@0.2.0-draft" "complete-message" (func $complete (param i32 i32 i32 i32 i32 i32 i32)))
  (import "wasi:messaging/consumer@0.2.0-draft" "update-guest-configuration" (func $update (param i32 i32 i32 i32 i32 i32)))
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
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
    (data (i32.const 1320) "guest.trace")
  (data (i32.const 1340) "side")
  (data (i32.const 1360) "guest.more")
  ;; list<string> ["guest.in", "guest.more"] @1400
  (data (i32.const 1400) "\b0\04\00\00" "\08\00\00\00" "\50\05\00\00" "\0a\00\00\00")
  (global $side_seen (export "side_seen") (mut i32) (i32.const 0))

  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    (local $client i32) (local $m i32)
    ;; connect("") -> result<client, error> @2064
    (call $connect (i32.const 1300) (i32.const 0) (i32.const 2064))
    (if (i32.load8_u (i32.const 2064)) (then unreachable))
    (local.set $client (i32.load (i32.const 2068)))
    ;; send(client, "", batch) must fail: result<_, error> @2080
    (call $send (local.get $client) (i32.const 1300) (i32.const 0) (local.get $list)
                (local.get $len) (i32.const 2080))
    (if (i32.eqz (i32.load8_u (i32.const 2080))) (then unreachable))
    (call $drop_error (i32.load (i32.const 2084)))
    ;; error.trace() -> string @2096; send it as one raw message built @2112
    (call $trace (i32.const 2096))
    (i32.store (i32.const 2112) (i32.load (i32.const 2096)))
    (i32.store (i32.const 2116) (i32.load (i32.const 2100)))
    (i32.store8 (i32.const 2120) (i32.const 5))
    (i32.store8 (i32.const 2124) (i32.const 0))
    (call $send (local.get $client) (i32.const 1320) (i32.const 11) (i32.const 2112) (i32.const 1)
                (i32.const 2080))
    (if (i32.load8_u (i32.const 2080)) (then unreachable))
    ;; subscribe-try-receive(client, "side", 200) -> result<option<list<message>>, error> @2144
    (call $try_receive (local.get $client) (i32.const 1340) (i32.const 4) (i32.const 200)
                       (i32.const 2144))
    (if (i32.load8_u (i32.const 2144)) (then unreachable))
    (if (i32.load8_u (i32.const 2148))
      (then
        (if (i32.eqz (i32.load (i32.const 2156))) (then unreachable))
        (local.set $m (i32.load (i32.const 2152)))
        (call $complete (i32.load (local.get $m)) (i32.load offset=4 (local.get $m))
                        (i32.load8_u offset=8 (local.get $m)) (i32.load8_u offset=12 (local.get $m))
                        (i32.load offset=16 (local.get $m)) (i32.load offset=20 (local.get $m))
                        (i32.const 2080))
        (if (i32.load8_u (i32.const 2080)) (then unreachable))
        (global.set $side_seen (i32.add (global.get $side_seen) (i32.const 1)))))
    ;; update-guest-configuration({ channels: ["guest.in", "guest.more"], extensions: none })
    (call $update (i32.const 1400) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0)
                  (i32.const 2080))
    (if (i32.load8_u (i32.const 2080)) (then unreachable))
    (call $drop_client (local.get $client))
    (global.set $heap (i32.const 65536))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
)

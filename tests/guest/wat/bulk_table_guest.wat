;; Test guest (issue 18 item 7): the bulk instructions other than memory.fill / memory.copy.
;; memory.init copies a 1 KiB passive data segment, table.fill / table.copy / table.init write
;; up to a table's 65,536 references, each in one interpreter step unless the load-time rewrite
;; charges them by length. With a batch of one message the handler checks that each still does
;; its job; with 2, 3 or 4 messages it runs 50,000 memory.init, 10,000 table.fill or 10,000
;; table.copy (a few steps each, the bytes and references not counted).
(module
  (type $ret (func (result i32)))
  (memory (export "memory") 2)
  (table $t 65536 funcref)
  (func $seven (type $ret) (i32.const 7))
  (elem $e funcref (ref.func $seven))
  (data $seg
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
    "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg"
    "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
    "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
    "jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj"
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
    "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll"
    "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
    "oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo"
    "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
  )
  (func $realloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (i32.const 4096))
  ;; configure() -> ok({ channels: ["guest.in"], extensions: none }), built in static data.
  (data (i32.const 1024) "\00\00\00\00" "\4c\04\00\00" "\01\00\00\00" "\00\00\00\00"
                         "\00\00\00\00" "\00\00\00\00")
  (data (i32.const 1100) "\b0\04\00\00" "\08\00\00\00")
  (data (i32.const 1200) "guest.in")
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#handler") (param $list i32) (param $len i32) (result i32)
    (local $i i32)
    (if (i32.eq (local.get $len) (i32.const 1))
      (then
        (memory.init $seg (i32.const 70000) (i32.const 64) (i32.const 960))
        (if (i32.ne (i32.load8_u (i32.const 70000)) (i32.const 0x62)) (then unreachable))
        (if (i32.ne (i32.load8_u (i32.const 70959)) (i32.const 0x70)) (then unreachable))
        (if (i32.ne (i32.load8_u (i32.const 70960)) (i32.const 0)) (then unreachable))
        (table.fill $t (i32.const 5) (ref.func $seven) (i32.const 2))
        (table.copy $t $t (i32.const 100) (i32.const 5) (i32.const 2))
        (table.init $t $e (i32.const 200) (i32.const 0) (i32.const 1))
        (if (i32.ne (call_indirect $t (type $ret) (i32.const 101)) (i32.const 7)) (then unreachable))
        (if (i32.ne (call_indirect $t (type $ret) (i32.const 200)) (i32.const 7)) (then unreachable))
        (if (i32.eqz (ref.is_null (table.get $t (i32.const 102)))) (then unreachable))))
    (if (i32.eq (local.get $len) (i32.const 2))
      (then
        (block $done
          (loop $each
            (br_if $done (i32.eq (local.get $i) (i32.const 50000)))
            (memory.init $seg (i32.const 0) (i32.const 0) (i32.const 1024))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each)))))
    (if (i32.eq (local.get $len) (i32.const 3))
      (then
        (block $done
          (loop $each
            (br_if $done (i32.eq (local.get $i) (i32.const 10000)))
            (table.fill $t (i32.const 0) (ref.null func) (i32.const 65536))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each)))))
    (if (i32.eq (local.get $len) (i32.const 4))
      (then
        (block $done
          (loop $each
            (br_if $done (i32.eq (local.get $i) (i32.const 10000)))
            (table.copy $t $t (i32.const 0) (i32.const 1) (i32.const 65535))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each)))))
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.const 2048))
  (func (export "wasi:messaging/messaging-guest@0.2.0-draft#configure") (result i32)
    (i32.const 1024))
)

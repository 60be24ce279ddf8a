import EngineCore
import TestSupport
import Testing

@Suite struct DigestTests {
    /// FIPS 180-4 test vectors.
    @Test func sha256Vectors() {
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let million = [UInt8](repeating: 0x61, count: 1_000_000)
        #expect(SHA256.hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// The standard CRC-32C check value.
    @Test func crc32cCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        // The slicing-by-8 path (contiguous) and the byte path (a lazy collection) agree at every length/offset.
        let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        for start in 0..<9 { for end in stride(from: start, through: 300, by: 7) {
            #expect(CRC32C.checksum(bytes[start..<end]) == CRC32C.checksum(bytes[start..<end].lazy.map { $0 }), "\(start)..<\(end)")
        } }
    }
}

@Suite struct CounterRandomTests {
    @Test func drawsAreAddressedNotSequential() {
        let r = CounterRandom(seed: 7, shard: 0, purpose: 1)
        let a = (0..<100).map { r.uniform(index: UInt64($0)) }
        let b = (0..<100).reversed().map { r.uniform(index: UInt64($0)) }.reversed()
        #expect(a == Array(b))
        #expect(r.uniform(index: 5) != CounterRandom(seed: 7, shard: 1, purpose: 1).uniform(index: 5))
        #expect(r.uniform(index: 5) != CounterRandom(seed: 7, shard: 0, purpose: 2).uniform(index: 5))
        #expect(r.uniform(index: 5) != CounterRandom(seed: 8, shard: 0, purpose: 1).uniform(index: 5))
    }

    /// Mean and variance of 10⁵ uniforms and normals. The mean of n uniforms has sd 1/√(12n) ≈ 9.1e-4; a 6σ
    /// bound (5.5e-3) fails with probability ~2e-9. Normal mean: sd 1/√n ≈ 3.2e-3 → bound 0.02; variance: sd
    /// √(2/n) ≈ 4.5e-3 → bound 0.03.
    @Test func moments() {
        let r = CounterRandom(seed: 1, shard: 0, purpose: 9)
        let n = 100_000
        let u = (0..<n).map { r.uniform(index: UInt64($0)) }
        #expect(u.allSatisfy { $0 >= 0 && $0 < 1 })
        #expect(abs(u.reduce(0, +) / Double(n) - 0.5) < 5.5e-3)
        let z = (0..<n).map { r.normal(index: UInt64($0)) }
        let m = z.reduce(0, +) / Double(n)
        let v = z.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n)
        #expect(abs(m) < 0.02 && abs(v - 1) < 0.03)
    }
}

@Suite struct StateEnvelopeTests {
    let envelope = StateEnvelope(kind: "gram", stateVersion: 3, paramsDigest: "abc", columns: 4, hasTarget: true,
                                 shard: 2, seed: 9, payload: [1, 2, 3, 4, 5])

    @Test func roundTrip() throws {
        #expect(try StateEnvelope.decode(envelope.encoded(), location: "x") == envelope)
    }

    @Test func everyFlippedByteIsCaught() {
        let bytes = envelope.encoded()
        for i in 0..<bytes.count {
            var b = bytes
            b[i] ^= 0x40
            #expect(throws: EngineError.self) { try StateEnvelope.decode(b, location: "x") }
        }
    }

    @Test func errorsAreDistinct() {
        var wrongMagic = envelope.encoded(); wrongMagic[0] = 0x41
        var wrongVersion = envelope.encoded(); wrongVersion[8] = 9
        let truncated = Array(envelope.encoded().prefix(20))
        func message(_ b: [UInt8]) -> String {
            do { _ = try StateEnvelope.decode(b, location: "s.bin"); return "" } catch { return error.description }
        }
        #expect(message(wrongMagic).contains("magic"))
        #expect(message(wrongVersion).contains("version 9"))
        #expect(message(truncated).contains("checksum") || message(truncated).contains("truncated"))
        var flipped = envelope.encoded(); flipped[flipped.count - 6] ^= 1
        #expect(message(flipped).contains("checksum"))
    }
}

@Suite struct JSONTests {
    @Test func encodesDeterministically() {
        let j = JSON.object([("b", .int(1)), ("a", .array([.double(0.1), .double(2), .null])), ("s", .string("q\"\n")),
                             ("nan", .double(.nan))])
        #expect(j.encoded() == #"{"b":1,"a":[0.1,2.0,null],"s":"q\"\n","nan":null}"#)
    }
}

@Suite struct RowBatchTests {
    @Test func removeRowsAndSlice() {
        var b = RowBatch(columns: 2, capacity: 5, hasTarget: true, hasWeight: false)
        for i in 0..<5 {
            let s = b.appendSlot(index: Int64(i * 10))
            b.features[2 * s] = Double(i); b.features[2 * s + 1] = Double(-i); b.targets![s] = Double(i) + 0.5
        }
        b.removeRows([1, 3])
        #expect(b.count == 3 && Array(b.indices.prefix(3)) == [0, 20, 40])
        #expect(Array(b.features.prefix(6)) == [0, 0, 2, -2, 4, -4])
        let s = b.slice(1, 2)
        #expect(s.count == 2 && s.indices == [20, 40] && s.targets! == [2.5, 4.5])
    }
}

@Suite struct StateBlobTests {
    func sample() -> StateBlob {
        let env = StateEnvelope(kind: "gram", stateVersion: 1, paramsDigest: String(repeating: "ab", count: 32), columns: 3,
                                hasTarget: true, shard: 5, seed: 9, payload: (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 37) })
        return StateBlob(manifestSHA256: (0..<32).map { UInt8($0) }, seed: 9, rowsRead: 12345, rowsSkipped: 2, rowsQuarantined: 1,
                         bytesIn: 99999, shards: [5], operators: [.init(id: "g", envelope: env.encoded()), .init(id: "m", envelope: env.encoded())])
    }

    /// RFC 4648 §10 test vectors, both ways, and rejection of non-canonical text.
    @Test func base64Vectors() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, coded) in vectors {
            #expect(Base64.encode(Array(plain.utf8)) == coded)
            #expect(Base64.decode(Array(coded.utf8)) == Array(plain.utf8))
        }
        #expect(Base64.decode(Array("Zm9".utf8)) == nil)
        #expect(Base64.decode(Array("Zm9*".utf8)) == nil)
        let all = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 131) }
        #expect(Base64.decode(Array(Base64.encode(all).utf8)) == all)
    }

    /// Binary and base64 forms decode to the blob encoded; several base64 lines give several blobs; the
    /// documented prefix holds.
    @Test func roundTrip() throws {
        let b = sample()
        #expect(try StateBlob.decode(b.encoded(), location: "t") == b)
        #expect(try StateBlob.decodeAll(b.encoded(), location: "t") == [b])
        let line = Base64.encode(b.encoded())
        #expect(line.hasPrefix(StateBlob.base64Prefix + "MDE"))
        var empty = b
        empty.operators = []
        empty.shards = [7]
        let text = Array((line + "\n\r\n  " + Base64.encode(empty.encoded()) + " \r\n").utf8)
        #expect(StateBlob.looksLikeBlob(text) && StateBlob.looksLikeBlob(b.encoded()))
        #expect(try StateBlob.decodeAll(text, location: "t") == [b, empty])
        #expect(try StateBlob.decodeAll(text, location: "t")[1].isEmpty)
    }

    /// Every single flipped byte is caught (magic, version or checksum: exit 65), and truncation too.
    @Test func corruptionIsDetected() {
        let bytes = sample().encoded()
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var c = bytes
            c[i] ^= 0x10
            do {
                _ = try StateBlob.decode(c, location: "b")
                Issue.record("flip at byte \(i) not detected")
            } catch {
                #expect(error.status == .dataError)
            }
        }
        var c = bytes
        c[100] ^= 1
        do { _ = try StateBlob.decode(c, location: "b"); Issue.record("not detected") } catch {
            #expect(error.description.contains("checksum mismatch"))
        }
        for n in [0, 10, 50, bytes.count - 1] {
            #expect(throws: EngineError.self) { _ = try StateBlob.decode(Array(bytes.prefix(n)), location: "b") }
        }
        #expect(throws: EngineError.self) { _ = try StateBlob.decodeAll(Array("UkZCTE9C!!!\n".utf8), location: "b") }
    }
}

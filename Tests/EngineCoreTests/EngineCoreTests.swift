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
        #expect(try StateEnvelope.decode(envelope.encoded(), context: "x") == envelope)
    }

    @Test func everyFlippedByteIsCaught() {
        let bytes = envelope.encoded()
        for i in 0..<bytes.count {
            var b = bytes
            b[i] ^= 0x40
            #expect(throws: EngineError.self) { try StateEnvelope.decode(b, context: "x") }
        }
    }

    @Test func errorsAreDistinct() {
        var wrongMagic = envelope.encoded(); wrongMagic[0] = 0x41
        var wrongVersion = envelope.encoded(); wrongVersion[8] = 9
        let truncated = Array(envelope.encoded().prefix(20))
        func message(_ b: [UInt8]) -> String {
            do { _ = try StateEnvelope.decode(b, context: "s.bin"); return "" } catch { return error.description }
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

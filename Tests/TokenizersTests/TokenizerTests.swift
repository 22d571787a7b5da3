import Foundation
import TestSupport
import XCTest

@testable import Tokenizers
import ONNXGraph

/// The Swift tokenizer against the `tokenizers` library, on fixtures made by tools/make_tokenizer_references.py.
final class TokenizerTests: XCTestCase {
    private static let fixtures = "fixtures/tokenizers"

    private struct Expected: Decodable {
        let cases: [String]
        let styles: [String: Style]
    }

    private struct Style: Decodable {
        let path: String
        let vocabSize: Int
        let bosToken: String?
        let bosTokenId: Int?
        let eosToken: String?
        let eosTokenId: Int?
        let results: [CaseResult]
        let decodeCases: [DecodeCase]
    }

    private struct CaseResult: Decodable {
        let ids: [Int]
        let idsNoSpecial: [Int]
        let decoded: String
        let decodedSkip: String
    }

    private struct DecodeCase: Decodable {
        let ids: [Int]
        let decoded: String
        let decodedSkip: String
    }

    private static let expected = Result<Expected, any Error>(catching: { () throws -> Expected in
        let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("\(fixtures)/expected.json")))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Expected.self, from: data)
    })

    /// Strings are compared by their Unicode scalars: Swift's `==` would accept a canonically equivalent string.
    private func same(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    private func show(_ text: String, limit: Int = 60) -> String {
        let scalars = Array(text.unicodeScalars)
        let shown = String(String.UnicodeScalarView(scalars.prefix(limit)))
        return shown.debugDescription + (scalars.count > limit ? "…" : "")
    }

    func testEncodeMatchesTokenizersLibraryForEveryStyleAndCase() throws {
        let expected = try Self.expected.get()
        XCTAssertGreaterThanOrEqual(expected.styles.count, 10)
        var comparisons = 0
        for (name, style) in expected.styles.sorted(by: { $0.key < $1.key }) {
            let tokenizer = try Tokenizer(path: repositoryPath(style.path))
            XCTAssertEqual(style.results.count, expected.cases.count, name)
            var mismatches: [String] = []
            for (index, (text, result)) in zip(expected.cases, style.results).enumerated() {
                for (addSpecialTokens, want) in [(true, result.ids), (false, result.idsNoSpecial)] {
                    comparisons += 1
                    let got = tokenizer.encode(text, addSpecialTokens: addSpecialTokens)
                    if got != want {
                        let firstDifference = (0..<min(got.count, want.count)).first { got[$0] != want[$0] }
                            ?? min(got.count, want.count)
                        mismatches.append(
                            "case \(index) \(show(text)) addSpecialTokens=\(addSpecialTokens): first difference at "
                                + "\(firstDifference): got \(got[firstDifference...].prefix(8).map { tokenizer.token(forID: $0) ?? "?" }) "
                                + "expected \(want[firstDifference...].prefix(8).map { tokenizer.token(forID: $0) ?? "?" }) "
                                + "(\(got.count) vs \(want.count) ids)")
                    }
                }
            }
            if !mismatches.isEmpty {
                XCTFail("\(name): \(mismatches.count) encodings differ; first: \n" + mismatches.prefix(4).joined(separator: "\n"))
            }
        }
        XCTAssertGreaterThan(comparisons, 1500)
    }

    func testDecodeMatchesTokenizersLibraryForEveryStyleAndCase() throws {
        let expected = try Self.expected.get()
        for (name, style) in expected.styles.sorted(by: { $0.key < $1.key }) {
            let tokenizer = try Tokenizer(path: repositoryPath(style.path))
            var mismatches: [String] = []
            let corpusChecks = style.results.map { ($0.ids, $0.decoded, $0.decodedSkip) }
            let randomChecks = style.decodeCases.map { ($0.ids, $0.decoded, $0.decodedSkip) }
            for (index, (ids, decoded, decodedSkip)) in (corpusChecks + randomChecks).enumerated() {
                for (skip, want) in [(false, decoded), (true, decodedSkip)] {
                    let got = tokenizer.decode(ids, skipSpecialTokens: skip)
                    if !same(got, want) {
                        mismatches.append("#\(index) skipSpecialTokens=\(skip): got \(show(got)) expected \(show(want))")
                    }
                }
            }
            if !mismatches.isEmpty {
                XCTFail("\(name): \(mismatches.count) decodings differ; first:\n" + mismatches.prefix(4).joined(separator: "\n"))
            }
        }
    }

    func testSpecialTokensAndVocabularySizeMatchTransformers() throws {
        let expected = try Self.expected.get()
        for (name, style) in expected.styles {
            let tokenizer = try Tokenizer(path: repositoryPath(style.path))
            XCTAssertEqual(tokenizer.vocabularySize, style.vocabSize, name)
            XCTAssertEqual(tokenizer.bosToken, style.bosToken, name)
            XCTAssertEqual(tokenizer.bosTokenID, style.bosTokenId, name)
            XCTAssertEqual(tokenizer.eosToken, style.eosToken, name)
            XCTAssertEqual(tokenizer.eosTokenID, style.eosTokenId, name)
            XCTAssertEqual(tokenizer.tokenizerClass, "PreTrainedTokenizerFast", name)
        }
    }

    func testIDAndTokenLookUpsAreInverse() throws {
        let tokenizer = try Tokenizer(path: repositoryPath("\(Self.fixtures)/llama2/tokenizer.json"))
        for id in 0..<tokenizer.vocabularySize {
            let token = try XCTUnwrap(tokenizer.token(forID: id), "id \(id)")
            XCTAssertEqual(tokenizer.id(forToken: token), id, token)
        }
        XCTAssertEqual(tokenizer.id(forToken: "<0x0A>"), 3 + 0x0A)
        XCTAssertNil(tokenizer.token(forID: tokenizer.vocabularySize))
        XCTAssertNil(tokenizer.id(forToken: "no such token"))
    }

    /// Every normalizer, pre-tokenizer and decoder configuration of components.json on its inputs, against the
    /// library's `normalize_str`, `pre_tokenize_str` and `decode`.
    func testComponentsMatchTokenizersLibrary() throws {
        let path = repositoryPath("\(Self.fixtures)/components.json")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard case .array(let entries) = try parseJSON([UInt8](data)) else { return XCTFail("components.json") }
        let reader = TokenizerConfigReader(path: path)
        var checked = 0
        for (index, entry) in entries.enumerated() {
            guard case .string(let kind)? = entry["kind"], let config = entry["config"],
                  case .array(let inputs)? = entry["inputs"], case .array(let outputs)? = entry["outputs"] else {
                return XCTFail("entry \(index) malformed")
            }
            let label = "\(kind) \(entry["config"].map { describe($0) } ?? "")"
            var mismatches: [String] = []
            switch kind {
            case "normalizer":
                let normalizer = try makeNormalizer(config, at: "normalizer", reader: reader)
                for (input, output) in zip(inputs, outputs) {
                    guard case .string(let text) = input, case .string(let want) = output else { continue }
                    let got = normalizer.normalize(text)
                    checked += 1
                    if !same(got, want) { mismatches.append("\(show(text)): got \(show(got)) expected \(show(want))") }
                }
            case "pre_tokenizer":
                let preTokenizer = try makePreTokenizer(config, at: "pre_tokenizer", reader: reader)
                for (input, output) in zip(inputs, outputs) {
                    guard case .string(let text) = input, case .array(let pieces) = output else { continue }
                    let want = pieces.compactMap { piece -> String? in
                        if case .string(let text) = piece { return text }
                        return nil
                    }
                    let got = preTokenizer.preTokenize([TextPiece(text: text, isAtStart: true)]).map(\.text)
                    checked += 1
                    if got.count != want.count || !zip(got, want).allSatisfy({ same($0, $1) }) {
                        let first = (0..<min(got.count, want.count)).first { !same(got[$0], want[$0]) }
                            ?? min(got.count, want.count)
                        mismatches.append("\(show(text)): from piece \(first) got \(got[first...].prefix(6)) "
                            + "expected \(want[first...].prefix(6))")
                    }
                }
            case "decoder":
                let decoder = try makeDecoder(config, at: "decoder", reader: reader)
                for (input, output) in zip(inputs, outputs) {
                    guard case .array(let tokenValues) = input else { continue }
                    let tokens = tokenValues.compactMap { value -> String? in
                        if case .string(let text) = value { return text }
                        return nil
                    }
                    // The library panics on some inputs (null); those only have to not crash here.
                    let got = decoder.decodeChain(tokens).joined()
                    guard case .string(let want) = output else { continue }
                    checked += 1
                    if !same(got, want) { mismatches.append("\(tokens): got \(show(got)) expected \(show(want))") }
                }
            case "tokenizer":
                let file = try temporaryDirectory(for: self).appendingPathComponent("tokenizer.json")
                try Data(encodeJSON(config).utf8).write(to: file)
                let tokenizer = try Tokenizer(path: file.path)
                for (input, output) in zip(inputs, outputs) {
                    guard case .string(let text) = input, case .array(let values) = output else { continue }
                    let want = try values.map { value -> Int in
                        guard case .number(let id) = value else { throw TokenizerError.invalidTokenizer(path: path, reason: "id") }
                        return Int(id)
                    }
                    let got = tokenizer.encode(text)
                    checked += 1
                    if got != want { mismatches.append("\(show(text)): got \(got) expected \(want)") }
                }
            default:
                XCTFail("unknown kind \(kind)")
            }
            if !mismatches.isEmpty {
                XCTFail("\(label): \(mismatches.count) differ; first:\n" + mismatches.prefix(3).joined(separator: "\n"))
            }
        }
        XCTAssertGreaterThan(checked, 2000)
    }

    /// `value` written back as JSON text (object keys in order and every string's scalars as they are, which
    /// JSONSerialization's dictionaries would not keep; JSONEncoder escapes the strings).
    private func encodeJSON(_ value: JSONValue) -> String {
        let jsonString = { (text: String) in String(decoding: try! JSONEncoder().encode(text), as: UTF8.self) }
        return switch value {
        case .null: "null"
        case .bool(let flag): flag ? "true" : "false"
        case .number(let number): number == number.rounded() ? String(Int(number)) : String(number)
        case .string(let text): jsonString(text)
        case .array(let elements): "[" + elements.map(encodeJSON).joined(separator: ",") + "]"
        case .object(let entries):
            "{" + entries.map { jsonString($0.key) + ":" + encodeJSON($0.value) }.joined(separator: ",") + "}"
        }
    }

    private func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool(let flag): "\(flag)"
        case .number(let number): "\(number)"
        case .string(let text): text.debugDescription
        case .array(let elements): "[" + elements.map(describe).joined(separator: ", ") + "]"
        case .object(let entries): "{" + entries.map { "\($0.key): \(describe($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    // MARK: Behaviour the fixtures do not pin down by themselves

    /// The three regex engines find the same pieces with the GPT-2, Llama-3 and Qwen2 regexes on every case (the other
    /// white space characters U+000B, U+0085, U+2028, U+00A0 included): the hand-written matchers, Swift's Regex, and
    /// the NSRegularExpression fallback.
    func testRegexEnginesAgreeOnTheCorpus() throws {
        let patterns = [KnownSplitPattern.gpt2Pattern, KnownSplitPattern.llama3Pattern, KnownSplitPattern.qwen2Pattern]
        let cases = try Self.expected.get().cases
        for pattern in patterns {
            let known = try CompiledRegex(pattern)
            let swift = try CompiledRegex(pattern, engine: .swift)
            let foundation = try CompiledRegex(pattern, engine: .foundation)
            for text in cases {
                let expected = swift.matchRanges(in: text)
                XCTAssertEqual(known.matchRanges(in: text), expected, "hand-written \(pattern) on \(show(text))")
                XCTAssertEqual(foundation.matchRanges(in: text), expected, "ICU \(pattern) on \(show(text))")
            }
        }
    }

    /// The hand-written matchers against Swift's Regex on random strings built from the characters these regexes
    /// treat specially (contractions in any case, digits of several scripts, every kind of white space and newline,
    /// combining marks, emoji with ZWJ and variation selectors).
    func testHandWrittenMatchersAgreeWithRegexOnRandomText() throws {
        let alphabet = [
            "a", "B", "z", "é", "e\u{301}", "ß", "Σ", "中", "ー", "1", "٣", "²", "½", "Ⅻ", " ", " ", " ", "\t", "\n",
            "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{A0}", "\u{2028}", "\u{3000}", "'", "'", "s", "S", "t",
            "T", "re", "RE", "Ve", "ll", "LL", "d", "M", ".", ",", "!", "-", "_", "$", "€", "(", "😀", "👨‍👩‍👧", "🇫🇷",
            "\u{200D}", "\u{FE0F}", "\u{301}", "<", "|", "\u{17F}",
        ]
        var generator = SeededGenerator(seed: 42)
        let patterns = [KnownSplitPattern.gpt2Pattern, KnownSplitPattern.llama3Pattern, KnownSplitPattern.qwen2Pattern]
        let compiled = try patterns.map { (try CompiledRegex($0), try CompiledRegex($0, engine: .swift)) }
        var failures = 0
        for _ in 0..<3000 {
            let length = Int(generator.next() % 24)
            let text = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }.joined()
            for (index, (known, swift)) in compiled.enumerated() where known.matchRanges(in: text) != swift.matchRanges(in: text) {
                failures += 1
                if failures <= 5 {
                    XCTFail("\(["gpt2", "llama3", "qwen2"][index]) on \(show(text)): hand-written "
                        + "\(known.matchRanges(in: text)) regex \(swift.matchRanges(in: text))")
                }
            }
        }
        XCTAssertEqual(failures, 0)
    }

    /// One tokenizer value shared by threads gives the same ids as serial use (the word cache is locked).
    func testConcurrentEncodingMatchesSerial() throws {
        let tokenizer = try Tokenizer(path: repositoryPath("\(Self.fixtures)/llama3"))
        let cases = try Self.expected.get().cases
        let serial = cases.map { tokenizer.encode($0) }
        let results = ResultBox(count: cases.count)
        DispatchQueue.concurrentPerform(iterations: cases.count * 4) { index in
            let item = index % cases.count
            results.set(item, tokenizer.encode(cases[item]))
        }
        XCTAssertEqual(results.values, serial)
    }

    /// Merges written as "a b" strings (files from tokenizers < 0.20) give the same ids as ["a", "b"] pairs.
    func testMergesInStringFormGiveTheSameIDs() throws {
        let source = repositoryPath("\(Self.fixtures)/gpt2/tokenizer.json")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source)))
            as? [String: Any])
        var model = try XCTUnwrap(json["model"] as? [String: Any])
        let pairs = try XCTUnwrap(model["merges"] as? [[String]], "the fixture is expected to hold pairs")
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        var rewritten = json
        rewritten["model"] = model
        let directory = try temporaryDirectory(for: self)
        let path = directory.appendingPathComponent("tokenizer.json")
        try JSONSerialization.data(withJSONObject: rewritten).write(to: path)

        let pairForm = try Tokenizer(path: source)
        let stringForm = try Tokenizer(path: path.path)
        for text in try Self.expected.get().cases {
            XCTAssertEqual(stringForm.encode(text), pairForm.encode(text), show(text))
        }
    }

    /// Tokens are told apart by their bytes: "é" (U+00E9) and "e\u{301}" are different tokens, though Swift's `==`
    /// calls the two strings equal.
    func testCanonicallyEquivalentTokensStayDistinct() throws {
        let directory = try temporaryDirectory(for: self)
        let json = #"""
            {"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null, "post_processor": null,
             "decoder": null,
             "model": {"type": "BPE", "vocab": {"e": 0, "\u0301": 1, "e\u0301": 2, "\u00e9": 3, "x": 4},
                       "merges": [["e", "\u0301"]]}}
            """#
        try Data(json.utf8).write(to: directory.appendingPathComponent("tokenizer.json"))
        let tokenizer = try Tokenizer(path: directory.path)
        XCTAssertEqual(tokenizer.encode("e\u{301}x\u{e9}"), [2, 4, 3])
        XCTAssertEqual(tokenizer.id(forToken: "e\u{301}"), 2)
        XCTAssertEqual(tokenizer.id(forToken: "\u{e9}"), 3)
        XCTAssertEqual(tokenizer.vocabularySize, 5)
        XCTAssertEqual(tokenizer.decode([2, 3]), "e\u{301} \u{e9}")  // no decoder: tokens joined by spaces
    }

    /// Without tokenizer_config.json, BOS/EOS come from the post-processor's special tokens.
    func testSpecialTokensFallBackToThePostProcessor() throws {
        let directory = try temporaryDirectory(for: self)
        for (style, bos, eos) in [("llama3", "<|begin_of_text|>", nil), ("roberta", "<s>", "</s>"), ("gpt2", nil, nil)] {
            let source = URL(fileURLWithPath: repositoryPath("\(Self.fixtures)/\(style)/tokenizer.json"))
            let target = directory.appendingPathComponent("\(style).json")
            try FileManager.default.copyItem(at: source, to: target)
            let tokenizer = try Tokenizer(path: target.path)
            XCTAssertEqual(tokenizer.bosToken, bos, style)
            XCTAssertEqual(tokenizer.eosToken, eos, style)
            XCTAssertEqual(tokenizer.bosTokenID, bos.flatMap { tokenizer.id(forToken: $0) }, style)
            XCTAssertNil(tokenizer.padToken, style)
        }
    }

    /// What TRL's plain-text DPO data goes through: the EOS text appended to a completion is matched as the single
    /// EOS id, and BOS comes from the post-processor only once, at the front.
    func testEOSTextAppendedToACompletionIsOneSpecialToken() throws {
        let tokenizer = try Tokenizer(path: fixturePath("models/llama-dynamo"))
        let eos = try XCTUnwrap(tokenizer.eosToken)
        let eosID = try XCTUnwrap(tokenizer.eosTokenID)
        let bosID = try XCTUnwrap(tokenizer.bosTokenID)
        let ids = tokenizer.encode("Question: 2+2?" + " Answer: 4" + eos)
        XCTAssertEqual(ids.first, bosID)
        XCTAssertEqual(ids.last, eosID)
        XCTAssertEqual(ids.filter { $0 == bosID }.count, 1)
        XCTAssertEqual(tokenizer.encode(eos, addSpecialTokens: false), [eosID])
    }

    // MARK: Errors a user can cause

    func testMissingFileIsAnInvalidTokenizerError() {
        assertThrows(["/no/such/folder/tokenizer.json", "no such file"]) {
            try Tokenizer(path: "/no/such/folder/tokenizer.json")
        }
    }

    func testFileThatIsNotJSONNamesTheLine() throws {
        let directory = try temporaryDirectory(for: self)
        let path = directory.appendingPathComponent("tokenizer.json")
        try Data("{\n  \"model\": nope\n}".utf8).write(to: path)
        assertThrows([path.path, "not valid JSON", "line 2"]) { try Tokenizer(path: path.path) }
    }

    private func writeVariant(of style: String, _ change: (inout [String: Any]) -> Void) throws -> String {
        let source = repositoryPath("\(Self.fixtures)/\(style)/tokenizer.json")
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source)))
            as? [String: Any])
        change(&json)
        let path = try temporaryDirectory(for: self).appendingPathComponent("tokenizer.json")
        try JSONSerialization.data(withJSONObject: json).write(to: path)
        return path.path
    }

    func testUnsupportedModelTypeNamesTheType() throws {
        let path = try writeVariant(of: "gpt2") { json in
            json["model"] = ["type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]]
        }
        assertThrows([path, "model", "'Unigram'", "not supported"]) { try Tokenizer(path: path) }
        XCTAssertThrowsError(try Tokenizer(path: path)) { error in
            XCTAssertEqual(error as? TokenizerError,
                           .unsupportedTokenizerComponent(path: path, component: "model", type: "Unigram"))
        }
    }

    func testUnsupportedPreTokenizerNamesWhereItIs() throws {
        let top = try writeVariant(of: "gpt2") { $0["pre_tokenizer"] = ["type": "UnicodeScripts"] }
        XCTAssertThrowsError(try Tokenizer(path: top)) { error in
            XCTAssertEqual(error as? TokenizerError,
                           .unsupportedTokenizerComponent(path: top, component: "pre_tokenizer", type: "UnicodeScripts"))
        }
        let nested = try writeVariant(of: "llama3") { json in
            json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
                ["type": "Digits", "individual_digits": true], ["type": "UnicodeScripts"],
            ]]
        }
        assertThrows([nested, "pre_tokenizer.pretokenizers[1]", "'UnicodeScripts'", "not supported"]) {
            try Tokenizer(path: nested)
        }
    }

    func testUnsupportedNormalizerAndDecoderAreReportedAtLoad() throws {
        let normalizer = try writeVariant(of: "qwen2") { $0["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": ""] }
        assertThrows(["normalizer", "'Precompiled'"]) { try Tokenizer(path: normalizer) }
        let decoder = try writeVariant(of: "qwen2") { $0["decoder"] = ["type": "CTC"] }
        assertThrows(["decoder", "'CTC'"]) { try Tokenizer(path: decoder) }
    }

    func testInconsistentFilesAreInvalid() throws {
        let badMerge = try writeVariant(of: "gpt2") { json in
            var model = json["model"] as! [String: Any]
            model["merges"] = [["Ġ", "no-such-token"]]
            json["model"] = model
        }
        assertThrows([badMerge, "model.merges[0]", "\"no-such-token\" is not in the vocabulary"]) {
            try Tokenizer(path: badMerge)
        }
        let badRegex = try writeVariant(of: "llama3") { json in
            json["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "(unclosed"], "behavior": "Isolated",
                                     "invert": false]
        }
        assertThrows([badRegex, "pre_tokenizer.pattern", "(unclosed"]) { try Tokenizer(path: badRegex) }
        let badTemplate = try writeVariant(of: "llama3") { json in
            json["post_processor"] = ["type": "TemplateProcessing",
                                      "single": [["SpecialToken": ["id": "<bos>", "type_id": 0]],
                                                 ["Sequence": ["id": "A", "type_id": 0]]],
                                      "pair": [], "special_tokens": [:] as [String: Any]]
        }
        assertThrows([badTemplate, "post_processor.single[0]", "'<bos>'"]) { try Tokenizer(path: badTemplate) }
    }

    /// Token ids outside `0...Int32.max` (the tokenizer fuzz target's crash: a negative vocabulary id trapped when the
    /// merge table packed it into 32 bits) are refused naming where they are.
    func testTokenIDsOutOfRangeAreInvalid() throws {
        let negative = try writeVariant(of: "gpt2") { json in
            var model = json["model"] as! [String: Any]
            var vocabulary = model["vocab"] as! [String: Any]
            vocabulary["Ġ"] = -3
            model["vocab"] = vocabulary
            json["model"] = model
        }
        assertThrows([negative, "model.vocab[\"Ġ\"]", "token id -3 is outside 0...2147483647"]) { try Tokenizer(path: negative) }
        let huge = try writeVariant(of: "gpt2") { json in
            var added = (json["added_tokens"] as? [[String: Any]]) ?? []
            added.append(["id": 4_294_967_296, "content": "<huge>", "special": true])
            json["added_tokens"] = added
        }
        assertThrows([huge, "added_tokens[\(try addedTokenCount(of: "gpt2"))].id", "outside"]) { try Tokenizer(path: huge) }
    }

    private func addedTokenCount(of style: String) throws -> Int {
        let source = repositoryPath("\(Self.fixtures)/\(style)/tokenizer.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: source))) as? [String: Any]
        return (json?["added_tokens"] as? [Any])?.count ?? 0
    }
}

/// Results written from several threads.
private final class ResultBox: @unchecked Sendable {
    // @unchecked: every access holds `lock`.
    private let lock = NSLock()
    private var storage: [[Int]]

    init(count: Int) { storage = Array(repeating: [], count: count) }

    func set(_ index: Int, _ value: [Int]) {
        lock.lock()
        storage[index] = value
        lock.unlock()
    }

    var values: [[Int]] {
        lock.lock()
        defer { lock.unlock() }
        return storage
    }
}


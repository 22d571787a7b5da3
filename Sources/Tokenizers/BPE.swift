import Foundation

/// Byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"), as the
/// `tokenizers` library's `BPE` model runs it: a word starts as one symbol per character (or per byte token with
/// `byte_fallback`), then the adjacent pair with the lowest merge rank is merged, leftmost first on ties, until no
/// pair has a merge.
///
/// Tokens are compared by their UTF-8 bytes, never by Swift `String` equality (which treats canonically equivalent
/// strings as equal, where tokenizers does not).
struct BPEModel: Sendable {
    /// Token bytes → id.
    let vocabulary: [[UInt8]: Int]
    /// id → token, for decoding (the model's own vocabulary; added tokens are looked up before this).
    let tokensByID: [Int: String]
    /// (left id, right id) packed as `left << 32 | right` → (rank, merged id).
    let merges: [UInt64: Merge]
    let unknownTokenID: Int?
    let fuseUnknown: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: [UInt8]?
    let endOfWordSuffix: [UInt8]?
    /// The id of `<0xNN>` for each byte, when `byteFallback` and the vocabulary has it.
    let byteTokenIDs: [Int?]
    private let cache = WordCache()

    struct Merge: Sendable {
        let rank: Int32
        let newID: Int32
    }

    init(json: JSONValue, at location: String, reader: TokenizerConfigReader) throws(TokenizerError) {
        if let dropout = json["dropout"], case .number(let probability) = dropout, probability > 0 {
            // With dropout tokenizers samples a different segmentation on every call; training data needs one.
            throw reader.invalid("\(location).dropout", "BPE dropout \(probability) is not supported (ids would be random)")
        }
        guard case .object(let entries)? = json["vocab"] else {
            throw reader.invalid(location, "missing or malformed field 'vocab'")
        }
        var vocabulary: [[UInt8]: Int] = [:]
        vocabulary.reserveCapacity(entries.count)
        var tokensByID: [Int: String] = [:]
        tokensByID.reserveCapacity(entries.count)
        for (token, value) in entries {
            let id = try reader.tokenID(value, at: "\(location).vocab[\(token.debugDescription)]")
            vocabulary[Array(token.utf8)] = id
            tokensByID[id] = token
        }
        self.vocabulary = vocabulary
        self.tokensByID = tokensByID

        let prefix = try reader.optionalString(json, "continuing_subword_prefix", at: location).map { Array($0.utf8) }
        continuingSubwordPrefix = prefix
        endOfWordSuffix = try reader.optionalString(json, "end_of_word_suffix", at: location).map { Array($0.utf8) }
        fuseUnknown = try reader.bool(json, "fuse_unk", default: false, at: location)
        byteFallback = try reader.bool(json, "byte_fallback", default: false, at: location)
        ignoreMerges = try reader.bool(json, "ignore_merges", default: false, at: location)
        if let unknown = try reader.optionalString(json, "unk_token", at: location) {
            guard let id = vocabulary[Array(unknown.utf8)] else {
                throw reader.invalid("\(location).unk_token", "'\(unknown)' is not in the vocabulary")
            }
            unknownTokenID = id
        } else {
            unknownTokenID = nil
        }
        byteTokenIDs = (0..<256).map { byte in vocabulary[Array(byteFallbackToken(UInt8(byte)).utf8)] }

        // Merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20, which allows spaces in tokens).
        let mergeList = json["merges"].flatMap { value -> [JSONValue]? in
            if case .array(let elements) = value { return elements }
            return nil
        } ?? []
        var merges: [UInt64: Merge] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, element) in mergeList.enumerated() {
            let mergeLocation = "\(location).merges[\(rank)]"
            let left: String
            let right: String
            switch element {
            case .string(let line):
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw reader.invalid(mergeLocation, "expected two tokens separated by one space, found \(line.debugDescription)")
                }
                left = String(parts[0])
                right = String(parts[1])
            case .array(let pair):
                guard pair.count == 2, case .string(let first) = pair[0], case .string(let second) = pair[1] else {
                    throw reader.invalid(mergeLocation, "expected a pair of strings")
                }
                left = first
                right = second
            default:
                throw reader.invalid(mergeLocation, "expected a string or a pair of strings, found \(element.kindName)")
            }
            let leftBytes = Array(left.utf8)
            let rightBytes = Array(right.utf8)
            guard let leftID = vocabulary[leftBytes] else {
                throw reader.invalid(mergeLocation, "token \(left.debugDescription) is not in the vocabulary")
            }
            guard let rightID = vocabulary[rightBytes] else {
                throw reader.invalid(mergeLocation, "token \(right.debugDescription) is not in the vocabulary")
            }
            // The merged token drops the right part's continuing-subword prefix ("hel" + "##lo" = "hello"... as
            // tokenizers writes it: the prefix length is cut from the right token unconditionally).
            let cut = min(prefix?.count ?? 0, rightBytes.count)
            let mergedBytes = leftBytes + rightBytes[cut...]
            guard let mergedID = vocabulary[mergedBytes] else {
                throw reader.invalid(
                    mergeLocation, "merged token \(String(decoding: mergedBytes, as: UTF8.self).debugDescription) is not in the vocabulary")
            }
            // A repeated pair keeps its last rank, as tokenizers' HashMap collection does.
            merges[UInt64(UInt32(leftID)) << 32 | UInt64(UInt32(rightID))] = Merge(rank: Int32(rank), newID: Int32(mergedID))
        }
        self.merges = merges
    }

    /// The ids of one pre-tokenized word.
    func tokenize(_ word: String) -> [Int] {
        let bytes = Array(word.utf8)
        if bytes.isEmpty { return [] }
        if ignoreMerges, let id = vocabulary[bytes] { return [id] }
        if let cached = cache.lookup(bytes) { return cached }
        let ids = mergeWord(bytes)
        cache.store(bytes, ids)
        return ids
    }

    private struct Symbol {
        var id: Int
        var previous: Int
        var next: Int
        /// 0 once merged into its left neighbour.
        var length: Int
    }

    /// tokenizers' `merge_word` + `Word::merge_all`.
    private func mergeWord(_ word: [UInt8]) -> [Int] {
        var symbols: [Symbol] = []
        symbols.reserveCapacity(word.count)
        func add(_ id: Int, _ length: Int) {
            let index = symbols.count
            if index > 0 { symbols[index - 1].next = index }
            symbols.append(Symbol(id: id, previous: index - 1, next: -1, length: length))
        }

        var pendingUnknown: (id: Int, length: Int)?
        var start = 0
        while start < word.count {
            let length = utf8SequenceLength(word[start])
            let end = min(start + length, word.count)
            let isFirst = start == 0
            let isLast = end == word.count
            var piece = Array(word[start..<end])
            if !isFirst, let prefix = continuingSubwordPrefix { piece = prefix + piece }
            if isLast, let suffix = endOfWordSuffix { piece += suffix }
            defer { start = end }

            if let id = vocabulary[piece] {
                if let unknown = pendingUnknown {
                    add(unknown.id, unknown.length)
                    pendingUnknown = nil
                }
                add(id, end - start)
                continue
            }
            if byteFallback {
                let ids = piece.map { byteTokenIDs[Int($0)] }
                if ids.allSatisfy({ $0 != nil }) {
                    // As tokenizers does: a pending unknown token is not flushed before byte tokens.
                    for id in ids { add(id!, 1) }
                    continue
                }
            }
            if let unknownID = unknownTokenID {
                if let unknown = pendingUnknown {
                    if fuseUnknown {
                        pendingUnknown = (unknown.id, unknown.length + end - start)
                    } else {
                        add(unknown.id, unknown.length)
                        pendingUnknown = (unknownID, end - start)
                    }
                } else {
                    pendingUnknown = (unknownID, end - start)
                }
            }
            // Without an unknown token the character is dropped, as tokenizers does.
        }
        if let unknown = pendingUnknown { add(unknown.id, unknown.length) }
        if symbols.count < 2 { return symbols.map(\.id) }

        // Lowest rank first; equal ranks in position order (a min-heap on (rank, position)).
        var queue = MergeQueue()
        for index in 0..<(symbols.count - 1) {
            if let merge = merges[pairKey(symbols[index].id, symbols[index + 1].id)] {
                queue.push(.init(rank: merge.rank, position: Int32(index), newID: merge.newID))
            }
        }
        while let top = queue.pop() {
            let position = Int(top.position)
            let current = symbols[position]
            if current.length == 0 || current.next == -1 { continue }
            let nextPosition = current.next
            let right = symbols[nextPosition]
            // Skip entries made stale by an earlier merge of either symbol.
            guard let merge = merges[pairKey(current.id, right.id)], merge.newID == top.newID else { continue }
            symbols[position].id = Int(top.newID)
            symbols[position].length += right.length
            symbols[position].next = right.next
            symbols[nextPosition].length = 0
            if right.next >= 0 && right.next < symbols.count { symbols[right.next].previous = position }
            let merged = symbols[position]
            if merged.previous >= 0, let merge = merges[pairKey(symbols[merged.previous].id, merged.id)] {
                queue.push(.init(rank: merge.rank, position: Int32(merged.previous), newID: merge.newID))
            }
            if merged.next >= 0 && merged.next < symbols.count,
               let merge = merges[pairKey(merged.id, symbols[merged.next].id)] {
                queue.push(.init(rank: merge.rank, position: Int32(position), newID: merge.newID))
            }
        }
        var ids: [Int] = []
        ids.reserveCapacity(symbols.count)
        for symbol in symbols where symbol.length != 0 { ids.append(symbol.id) }
        return ids
    }

    private func pairKey(_ left: Int, _ right: Int) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: left)) << 32 | UInt64(UInt32(truncatingIfNeeded: right))
    }
}

/// SentencePiece's name for a byte token: `<0x0A>` (upper-case hex, as tokenizers formats `{:#04X}`).
func byteFallbackToken(_ byte: UInt8) -> String {
    let hex = String(byte, radix: 16, uppercase: true)
    return "<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"
}

/// The length of the UTF-8 sequence a lead byte starts (1 for a stray continuation byte).
func utf8SequenceLength(_ lead: UInt8) -> Int {
    switch lead {
    case 0xF0...: 4
    case 0xE0...: 3
    case 0xC0...: 2
    default: 1
    }
}

/// A binary min-heap of pending merges ordered by (rank, position).
private struct MergeQueue {
    struct Entry {
        let rank: Int32
        let position: Int32
        let newID: Int32

        func precedes(_ other: Entry) -> Bool {
            rank != other.rank ? rank < other.rank : position < other.position
        }
    }

    private var heap: [Entry] = []

    mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let first = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return first }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && heap[left].precedes(heap[smallest]) { smallest = left }
            if right < heap.count && heap[right].precedes(heap[smallest]) { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return first
    }
}

/// Word → ids, shared by all copies of a tokenizer and safe across threads. Bounded like tokenizers' cache: once
/// full, new words are computed but not stored.
private final class WordCache: @unchecked Sendable {
    // @unchecked: every access to `entries` holds `lock`.
    private let lock = NSLock()
    private var entries: [[UInt8]: [Int]] = [:]
    private let capacity = 100_000
    /// Longer words are not worth keeping (tokenizers uses 256 bytes too).
    private let maximumWordLength = 256

    func lookup(_ word: [UInt8]) -> [Int]? {
        lock.lock()
        defer { lock.unlock() }
        return entries[word]
    }

    func store(_ word: [UInt8], _ ids: [Int]) {
        guard word.count <= maximumWordLength else { return }
        lock.lock()
        defer { lock.unlock() }
        if entries.count < capacity { entries[word] = ids }
    }
}

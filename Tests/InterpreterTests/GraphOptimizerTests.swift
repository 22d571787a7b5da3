import Foundation
@testable import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// The session's rewrites change no result: every fixture gives the same logits with and without them.
final class GraphOptimizerTests: XCTestCase {
    /// Every fixture's logits with and without the rewrites, and counts that tie each node a rewrite removed to the
    /// fused node that replaced it; every rewrite must fire on some fixture.
    func testEveryRewriteGivesTheUnoptimisedLogits() throws {
        var fusedSomewhere = false
        var swishSomewhere = false
        var normSomewhere = false
        var scaleSomewhere = false
        var rotationSomewhere = false
        var gatedSomewhere = false
        var groupedSomewhere = false
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let inputs = try fixture.inputs()
            let optimized = try Session(model: model)
            let plain = try Session(model: model, optimize: false)
            // Each transA / transB flag stands for one Transpose folded away (GroupedMatMul keeps its FusedMatMul's).
            let fused = optimized.nodes.filter { ["FusedMatMul", "GroupedMatMul"].contains($0.opType) }
                .map { node in ["transA", "transB"].filter { (try? node.int($0, default: 0)) == 1 }.count }
                .reduce(0, +)
            let transposes = { (session: Session) in session.nodes.filter { $0.opType == "Transpose" }.count }
            XCTAssertEqual(transposes(plain) - transposes(optimized), fused, "\(fixture.name): one Transpose removed per folded operand")
            fusedSomewhere = fusedSomewhere || fused > 0
            let gated = optimized.nodes.filter { $0.opType == "GatedQuickGelu" }.count
            let swish = optimized.nodes.filter { $0.opType == "QuickGelu" }.count + gated
            XCTAssertEqual(plain.nodes.filter { $0.opType == "Sigmoid" }.count - optimized.nodes.filter { $0.opType == "Sigmoid" }.count,
                           swish, "\(fixture.name): one Sigmoid removed per QuickGelu")
            swishSomewhere = swishSomewhere || swish > 0
            let norms = optimized.nodes.filter { $0.opType == "SimplifiedLayerNormalization" }.count
                - plain.nodes.filter { $0.opType == "SimplifiedLayerNormalization" }.count
            XCTAssertEqual(plain.nodes.filter { $0.opType == "ReduceMean" }.count - optimized.nodes.filter { $0.opType == "ReduceMean" }.count,
                           norms, "\(fixture.name): one ReduceMean removed per fused RMSNorm")
            normSomewhere = normSomewhere || norms > 0
            let scaled = optimized.nodes.filter {
                ["FusedMatMul", "GroupedMatMul"].contains($0.opType) && (try? $0.float("alpha", default: 1)) != 1
            }.count
            XCTAssertEqual(plain.nodes.filter { $0.opType == "Mul" }.count - optimized.nodes.filter { $0.opType == "Mul" }.count,
                           scaled + swish + gated + 2 * norms + 2 * optimized.nodes.filter { $0.opType == "RotateHalfEmbedding" }.count,
                           "\(fixture.name): Muls folded into products, SiLUs, gates, RMSNorms and rotations")
            gatedSomewhere = gatedSomewhere || gated > 0
            scaleSomewhere = scaleSomewhere || scaled > 0
            let grouped = optimized.nodes.filter { $0.opType == "GroupedMatMul" }.count
            XCTAssertEqual(plain.nodes.filter { $0.opType == "Expand" }.count - optimized.nodes.filter { $0.opType == "Expand" }.count,
                           grouped, "\(fixture.name): one repeat of K or V removed per grouped product")
            groupedSomewhere = groupedSomewhere || grouped > 0
            let rotations = optimized.nodes.filter { $0.opType == "RotateHalfEmbedding" }.count
            XCTAssertEqual(plain.nodes.filter { $0.opType == "Neg" }.count - optimized.nodes.filter { $0.opType == "Neg" }.count,
                           rotations, "\(fixture.name): one Neg removed per fused rotation")
            rotationSomewhere = rotationSomewhere || rotations > 0
            assertClose(try XCTUnwrap(optimized.run(inputs)["logits"]), try XCTUnwrap(plain.run(inputs)["logits"]),
                        relative: 1e-5, absolute: 1e-5, fixture.name)
        }
        XCTAssert(groupedSomewhere, "grouped-query attention's products should become GroupedMatMul in some fixture")
        XCTAssert(gatedSomewhere, "the gated MLP's SiLU(gate) · up should become GatedQuickGelu in some fixture")
        XCTAssert(rotationSomewhere, "the dynamo exports' rotate-half should become RotateHalfEmbedding in some fixture")
        XCTAssert(fusedSomewhere, "attention's Q·Kᵀ should be fused in some fixture")
        XCTAssert(swishSomewhere, "Llama's SiLU should become QuickGelu in some fixture")
        XCTAssert(normSomewhere, "the dynamo exports' RMSNorm should become SimplifiedLayerNormalization in some fixture")
        XCTAssert(scaleSomewhere, "attention's score scale should fold into its product in some fixture")
    }

    /// The rewrites change no gradient beyond rounding: every trainable initializer a fused node reads (the RMSNorm
    /// weights) or that reaches one (the projections) gets the unoptimised session's gradient.
    func testRewritesKeepGradients() throws {
        var covered: [String] = []
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let optimized = try Session(model: model), plain = try Session(model: model, optimize: false)
            let normWeights = Set(optimized.nodes.filter { $0.opType == "SimplifiedLayerNormalization" }.map { $0.inputs[1] })
            guard !normWeights.isEmpty else { continue }
            covered.append(fixture.name)
            let projections = model.graph.initializers.filter { initializer in
                initializer.shape.count == 2 && model.graph.nodes.contains { $0.opType == "MatMul" && $0.inputs.last == initializer.name }
            }.map(\.name)
            let trainable = normWeights.union(projections.prefix(2))
            let feeds = try fixture.inputs().filter { key, _ in plain.inputs.contains { $0.name == key } }
            let expected = try seededGradients(plain, feeds: feeds, trainable: trainable)
            let actual = try seededGradients(optimized, feeds: feeds, trainable: trainable)
            for name in trainable {
                assertClose(try XCTUnwrap(actual[name]), try XCTUnwrap(expected[name]), relative: 1e-4, absolute: 1e-5,
                            "\(fixture.name) d\(name)")
            }
        }
        XCTAssertGreaterThanOrEqual(covered.count, 3, "fixtures with a fused RMSNorm: \(covered)")
    }

    /// The spellings of RMSNorm torch's exporters write all fuse, operands in either order, and give the unfused
    /// values; a chain whose intermediate something else reads, or that normalises over another axis, is left alone.
    func testRMSNormalizationFusionMatchesItsSpellingsOnly() throws {
        let x = Tensor(shape: [2, 3, 8], floats: (0..<48).map { Float(($0 * 37) % 23) * 0.1 - 1.1 })
        let constants: [String: Tensor] = [
            "weight": Tensor(shape: [8], floats: (0..<8).map { 0.5 + Float($0) * 0.125 }),
            "two": Tensor(shape: [], floats: [2]), "eps": Tensor(shape: [], floats: [1e-5]), "one": Tensor(shape: [], floats: [1]),
            "last": Tensor(shape: [1], int64s: [-1]), "first": Tensor(shape: [1], int64s: [1]),
        ]
        struct Spelling {
            var name: String
            var square = ("Pow", ["x", "two"])
            var axes = "last"
            var axesAttribute: [Int]? = nil
            var epsilonFirst = false
            var reciprocal = true
            var weightFirst = true
            var extraReader: String? = nil
            var fuses = true
        }
        let spellings = [
            Spelling(name: "dynamo"),
            Spelling(name: "Mul(x, x), Div(1, ·), operands swapped", square: ("Mul", ["x", "x"]), epsilonFirst: true,
                     reciprocal: false, weightFirst: false),
            Spelling(name: "axes attribute", axesAttribute: [-1]),
            Spelling(name: "mean over axis 1", axes: "first", fuses: false),
            Spelling(name: "axes attribute [1]", axesAttribute: [1], fuses: false),
            Spelling(name: "rsqrt read twice", extraReader: "rsqrt", fuses: false),
            Spelling(name: "x² read twice", extraReader: "squared", fuses: false),
        ]
        for spelling in spellings {
            var nodes = [
                Node(name: "square", opType: spelling.square.0, inputs: spelling.square.1, outputs: ["squared"]),
                Node(name: "mean", opType: "ReduceMean", inputs: spelling.axesAttribute == nil ? ["squared", spelling.axes] : ["squared"],
                     outputs: ["mean"], attributes: spelling.axesAttribute.map { ["axes": .ints($0)] } ?? [:]),
                Node(name: "add", opType: "Add", inputs: spelling.epsilonFirst ? ["eps", "mean"] : ["mean", "eps"], outputs: ["sum"]),
                Node(name: "sqrt", opType: "Sqrt", inputs: ["sum"], outputs: ["root"]),
                spelling.reciprocal ? Node(name: "inverse", opType: "Reciprocal", inputs: ["root"], outputs: ["rsqrt"])
                    : Node(name: "inverse", opType: "Div", inputs: ["one", "root"], outputs: ["rsqrt"]),
                Node(name: "scale", opType: "Mul", inputs: spelling.weightFirst ? ["x", "rsqrt"] : ["rsqrt", "x"], outputs: ["normalized"]),
                Node(name: "weigh", opType: "Mul", inputs: spelling.weightFirst ? ["weight", "normalized"] : ["normalized", "weight"],
                     outputs: ["y"]),
            ]
            let (rewritten, fused) = try optimized(&nodes, constants: constants, extraReader: spelling.extraReader,
                                                   fusing: "SimplifiedLayerNormalization", expected: spelling.fuses, spelling.name)
            guard let fused else { continue }
            XCTAssertEqual(fused.inputs, ["x", "weight"], spelling.name)
            XCTAssertEqual(try fused.float("epsilon", default: 0), 1e-5, spelling.name)
            XCTAssertEqual(rewritten.foldedConstants, Set(["eps", spelling.square.1[1], spelling.reciprocal ? nil : "one",
                                                          spelling.axesAttribute == nil ? spelling.axes : nil].compactMap { $0 }.filter { $0 != "x" }),
                           spelling.name)
            // The fused node computes the chain's values.
            func run(_ nodes: [Node]) throws -> Tensor {
                let session = try Session(model: try graphModel(nodes: nodes, outputs: ["y"], opset: spelling.axesAttribute == nil ? 18 : 13),
                                          optimize: false, additionalInitializers: constants)
                return try XCTUnwrap(session.run(["x": x])["y"])
            }
            assertClose(try run(rewritten.nodes), try run(nodes), relative: 1e-6, absolute: 1e-6, spelling.name)
        }
    }

    /// Rotary embedding's "rotate half", as the dynamo exporter writes it (Slice bounds as constants, axis 3, the
    /// upper Slice open-ended), fuses into `RotateHalfEmbedding` for an even or uneven split and broadcast cos / sin,
    /// giving the chain's values bit for bit and its gradients; a bounded upper Slice or a shared intermediate is left
    /// alone.
    func testRotateHalfFusionGivesTheChainsValuesAndGradients() throws {
        struct Case {
            var name: String
            var split = 4
            var cosShape = [1, 1, 5, 8]
            var upperEnd = Int64.max
            var extraReader: String? = nil
            var fuses = true
        }
        let cases = [
            Case(name: "half"), Case(name: "uneven split", split: 3), Case(name: "cos per sequence", cosShape: [2, 1, 5, 8]),
            Case(name: "upper slice bounded", upperEnd: 7, fuses: false),
            Case(name: "negation read twice", extraReader: "negated", fuses: false),
        ]
        for test in cases {
            let constants: [String: Tensor] = [
                "zero": Tensor(shape: [1], int64s: [0]), "split": Tensor(shape: [1], int64s: [Int64(test.split)]),
                "end": Tensor(shape: [1], int64s: [test.upperEnd]), "axis": Tensor(shape: [1], int64s: [3]),
                "one": Tensor(shape: [1], int64s: [1]),
            ]
            var nodes = [
                Node(name: "direct", opType: "Mul", inputs: ["x", "cos"], outputs: ["direct"]),
                Node(name: "lower", opType: "Slice", inputs: ["x", "zero", "split", "axis", "one"], outputs: ["lower"]),
                Node(name: "upper", opType: "Slice", inputs: ["x", "split", "end", "axis", "one"], outputs: ["upper"]),
                Node(name: "negate", opType: "Neg", inputs: ["upper"], outputs: ["negated"]),
                Node(name: "rotate", opType: "Concat", inputs: ["negated", "lower"], outputs: ["rotated"], attributes: ["axis": .int(-1)]),
                Node(name: "mix", opType: "Mul", inputs: ["sin", "rotated"], outputs: ["mixed"]),
                Node(name: "sum", opType: "Add", inputs: ["mixed", "direct"], outputs: ["y"]),
            ]
            let (rewritten, fused) = try optimized(&nodes, constants: constants, extraReader: test.extraReader,
                                                   fusing: "RotateHalfEmbedding", expected: test.fuses, test.name)
            guard let fused else { continue }
            XCTAssertEqual(fused.inputs, ["x", "cos", "sin"], test.name)
            XCTAssertEqual(try fused.int("split", default: 0), test.split, test.name)
            let feeds: [String: Tensor] = [
                "x": Tensor(shape: [2, 3, 5, 8], floats: uniformTestValues(240, seed: 3)),
                "cos": Tensor(shape: test.cosShape, floats: uniformTestValues(test.cosShape.reduce(1, *), seed: 4)),
                "sin": Tensor(shape: test.cosShape, floats: uniformTestValues(test.cosShape.reduce(1, *), seed: 5)),
            ]
            func model(_ nodes: [Node]) throws -> Model { try graphModel(nodes: nodes, outputs: ["y"], opset: 18, inputs: ["x", "cos", "sin"]) }
            let fusedSession = try Session(model: try model(rewritten.nodes), optimize: false, additionalInitializers: constants)
            let chainSession = try Session(model: try model(nodes), optimize: false, additionalInitializers: constants)
            assertBitIdentical(try fusedSession.run(feeds)["y"], try XCTUnwrap(chainSession.run(feeds)["y"]), test.name)
            let seed = ["y": Tensor(shape: [2, 3, 5, 8], floats: uniformTestValues(240, seed: 6))]
            let trainable: Set<String> = ["x", "cos", "sin"]
            let fusedGradients = try fusedSession.forward(feeds, trainable: trainable).backward(seed)
            let chainGradients = try chainSession.forward(feeds, trainable: trainable).backward(seed)
            for name in trainable.sorted() {
                assertClose(try XCTUnwrap(fusedGradients[name]), try XCTUnwrap(chainGradients[name]), relative: 1e-6,
                            absolute: 1e-6, "\(test.name) d\(name)")
            }
            // And the fused rule against finite differences, on its own.
            XCTAssertNil(try GradientCheckTests.check(try model(rewritten.nodes), feeds: feeds, trainable: trainable), test.name)
        }
    }

    /// `SiLU(gate) · up` fuses into `GatedQuickGelu`, whose kernels give the two ops' values and gradients bit for bit;
    /// broadcasting and half-precision operands take the two ops' own path inside it; a shared activation is left alone.
    func testGatedActivationFusionGivesTheTwoOpsValuesAndGradients() throws {
        struct Case {
            var name: String
            var upShape = [3, 5, 32]
            var type = DataType.float
            var activationReadTwice = false
        }
        let cases = [Case(name: "same shapes"), Case(name: "broadcast up", upShape: [1, 32]),
                     Case(name: "float16", type: .float16), Case(name: "activation read twice", activationReadTwice: true)]
        for test in cases {
            var nodes = [
                Node(name: "sigmoid", opType: "Sigmoid", inputs: ["gate"], outputs: ["s"]),
                Node(name: "silu", opType: "Mul", inputs: ["gate", "s"], outputs: ["activated"]),
                Node(name: "gated", opType: "Mul", inputs: ["up", "activated"], outputs: ["y"]),
            ]
            var outputs: Set<String> = ["y"]
            if test.activationReadTwice {
                nodes.append(Node(name: "extra", opType: "Identity", inputs: ["activated"], outputs: ["extra"]))
                outputs.insert("extra")
            }
            let rewritten = GraphOptimizer.optimize(nodes, graphOutputs: outputs).nodes
            XCTAssertEqual(rewritten.map(\.opType), test.activationReadTwice ? ["QuickGelu", "Mul", "Identity"] : ["GatedQuickGelu"],
                           test.name)
            if test.activationReadTwice { continue }
            XCTAssertEqual(rewritten.first?.inputs, ["gate", "up"], test.name)
            let gateValues = uniformTestValues(480, seed: 8).map { $0 * 4 }
            let upValues = uniformTestValues(test.upShape.reduce(1, *), seed: 9)
            let feeds: [String: Tensor] = test.type == .float16
                ? ["gate": Tensor(shape: [3, 5, 32], floats: gateValues.map { Float(Float16($0)) }, dataType: .float16),
                   "up": Tensor(shape: test.upShape, floats: upValues.map { Float(Float16($0)) }, dataType: .float16)]
                : ["gate": Tensor(shape: [3, 5, 32], floats: gateValues), "up": Tensor(shape: test.upShape, floats: upValues)]
            func model(_ nodes: [Node]) throws -> Model {
                var model = try graphModel(nodes: nodes, outputs: ["y"], opset: 18, inputs: ["gate", "up"], type: test.type)
                model.opsetImports[GraphOptimizer.fusedDomain] = 1
                return model
            }
            // The two ops the fused one replaces (what the session ran before), and the graph's own three.
            let twoOps = [Node(name: "silu", opType: "QuickGelu", domain: GraphOptimizer.fusedDomain, inputs: ["gate"],
                               outputs: ["activated"], attributes: ["alpha": .float(1)]), nodes[2]]
            let fused = try Session(model: try model(rewritten), optimize: false)
            let chain = try Session(model: try model(twoOps), optimize: false)
            let graph = try Session(model: try model(nodes), optimize: false)
            assertBitIdentical(try fused.run(feeds)["y"], try XCTUnwrap(chain.run(feeds)["y"]), test.name)
            guard test.type == .float else { continue }
            let seed = ["y": Tensor(shape: [3, 5, 32], floats: uniformTestValues(480, seed: 10))]
            for trainable in [Set(["gate", "up"]), ["gate"], ["up"]] {
                let fusedGradients = try fused.forward(feeds, trainable: trainable).backward(seed)
                let chainGradients = try chain.forward(feeds, trainable: trainable).backward(seed)
                let graphGradients = try graph.forward(feeds, trainable: trainable).backward(seed)
                for name in trainable.sorted() {
                    assertBitIdentical(fusedGradients[name], try XCTUnwrap(chainGradients[name]), "\(test.name) d\(name) of \(trainable)")
                    assertClose(try XCTUnwrap(fusedGradients[name]), try XCTUnwrap(graphGradients[name]), relative: 1e-5,
                                absolute: 1e-6, "\(test.name) d\(name) of \(trainable) against Sigmoid and Mul")
                }
            }
            XCTAssertNil(try GradientCheckTests.check(try model(rewritten), feeds: feeds, trainable: ["gate", "up"]), test.name)
        }
    }

    /// Grouped-query attention's products on `repeat_kv`'s copies fuse into `GroupedMatMul`: the same outputs bit for bit
    /// (each element is the same dot product) and the same gradients (K's and V's summed over each group by the stacked
    /// product instead of by Expand's rule), with B's transpose and alpha carried over; shapes that are not a head
    /// repeat run the three ops inside the fused one and agree too.
    func testGroupedProductsGiveTheRepeatedHeadsResults() throws {
        struct Case {
            var name: String
            var a: [Int], b: [Int], expand: [Int64], reshape: [Int64]
            var transposed = false
        }
        let cases = [
            Case(name: "P·V, 3 query heads per key/value head", a: [2, 6, 5, 7], b: [2, 2, 7, 4],
                 expand: [2, 2, 3, 7, 4], reshape: [2, 6, 7, 4]),
            Case(name: "scaled Q·Kᵀ, reshape with 0 and -1", a: [2, 4, 5, 8], b: [2, 2, 6, 8], expand: [1, 1, 2, 1, 1],
                 reshape: [0, -1, 6, 8], transposed: true),
            Case(name: "no repeat of heads (merges other axes)", a: [1, 2, 5, 6], b: [1, 2, 3, 4], expand: [1, 2, 2, 3, 4],
                 reshape: [1, 2, 6, 4]),
            Case(name: "no key/value heads", a: [1, 0, 5, 3], b: [1, 0, 3, 4], expand: [1, 0, 2, 3, 4], reshape: [1, 0, 3, 4]),
        ]
        for test in cases {
            let constants: [String: Tensor] = ["axes": Tensor(shape: [1], int64s: [2]), "scale": Tensor(shape: [], floats: [0.125])]
            var nodes = [
                Node(name: "unsqueeze", opType: "Unsqueeze", inputs: ["b", "axes"], outputs: ["unsqueezed"]),
                Node(name: "expand", opType: "Expand", inputs: ["unsqueezed", "s5"], outputs: ["expanded"]),
                Node(name: "reshape", opType: "Reshape", inputs: ["expanded", "s4"], outputs: ["repeated"]),
            ]
            if test.transposed {
                nodes += [Node(name: "transpose", opType: "Transpose", inputs: ["repeated"], outputs: ["kt"],
                               attributes: ["perm": .ints([0, 1, 3, 2])]),
                          Node(name: "product", opType: "MatMul", inputs: ["a", "kt"], outputs: ["p"]),
                          Node(name: "scaled", opType: "Mul", inputs: ["p", "scale"], outputs: ["y"])]
            } else {
                nodes.append(Node(name: "product", opType: "MatMul", inputs: ["a", "repeated"], outputs: ["y"]))
            }
            let rewritten = GraphOptimizer.optimize(nodes, graphOutputs: ["y"],
                                                    constants: GraphOptimizer.Constants(initializers: constants, nodes: nodes))
            XCTAssertEqual(rewritten.nodes.map(\.opType), ["GroupedMatMul"], test.name)
            XCTAssertEqual(rewritten.nodes.first?.inputs, ["a", "b", "s5", "s4"], test.name)
            let feeds: [String: Tensor] = [
                "a": Tensor(shape: test.a, floats: uniformTestValues(test.a.reduce(1, *), seed: 11)),
                "b": Tensor(shape: test.b, floats: uniformTestValues(test.b.reduce(1, *), seed: 12)),
                "s5": Tensor(shape: [5], int64s: test.expand), "s4": Tensor(shape: [4], int64s: test.reshape),
            ]
            func session(_ nodes: [Node]) throws -> Session {
                var model = try graphModel(nodes: nodes, outputs: ["y"], opset: 18, inputs: ["a", "b"])
                model.graph.inputs += [ValueInfo(name: "s5", elementType: .int64, shape: nil),
                                       ValueInfo(name: "s4", elementType: .int64, shape: nil)]
                return try Session(model: model, optimize: false, additionalInitializers: constants)
            }
            let fused = try session(rewritten.nodes), chain = try session(nodes)
            let y = try XCTUnwrap(chain.run(feeds)["y"])
            assertBitIdentical(try fused.run(feeds)["y"], y, test.name)
            let seed = ["y": Tensor(shape: y.shape, floats: uniformTestValues(y.count, seed: 13))]
            for trainable in [Set(["a", "b"]), ["a"], ["b"]] {
                let expected = try chain.forward(feeds, trainable: trainable).backward(seed)
                let actual = try fused.forward(feeds, trainable: trainable).backward(seed)
                for name in trainable.sorted() {
                    assertClose(try XCTUnwrap(actual[name]), try XCTUnwrap(expected[name]), relative: 1e-5, absolute: 1e-6,
                                "\(test.name) d\(name) of \(trainable.sorted())")
                }
            }
            XCTAssertNil(try GradientCheckTests.check(try session(rewritten.nodes).model, feeds: feeds, trainable: ["a", "b"]),
                         test.name)
        }
    }

    /// A scalar constant folded into a fused op's attribute (here attention's score scale) can no longer be replaced
    /// or trained: the session says so instead of silently running the old value. Unoptimised, it is an ordinary
    /// initializer.
    func testFoldedConstantsAreRefused() throws {
        let model = try ExportFixture.named("llama-dynamo").model()
        let producers = Dictionary(model.graph.nodes.flatMap { node in node.outputs.map { ($0, node.opType) } }, uniquingKeysWith: { a, _ in a })
        let scalars = Set(model.graph.initializers.filter { $0.count == 1 && $0.dataType == .float }.map(\.name))
        let scale = try XCTUnwrap(model.graph.nodes.first { node in
            node.opType == "Mul" && node.inputs.contains(where: scalars.contains)
                && node.inputs.contains { producers[$0] == "MatMul" }
        }?.inputs.first(where: scalars.contains))
        let session = try Session(model: model)
        XCTAssertThrowsError(try session.setInitializer(scale, Tensor(shape: [], floats: [2]))) { error in
            XCTAssert("\(error)".contains("folded"), "\(error)")
        }
        let feeds = try ExportFixture.named("llama-dynamo").inputs().filter { key, _ in session.inputs.contains { $0.name == key } }
        XCTAssertThrowsError(try session.forward(feeds, trainable: [scale])) { error in
            XCTAssert("\(error)".contains("folded"), "\(error)")
        }
        let plain = try Session(model: model, optimize: false)
        let shape = try XCTUnwrap(model.graph.initializers.first { $0.name == scale }).shape
        try plain.setInitializer(scale, Tensor(shape: shape, floats: [2]))
    }

    /// `nodes` (plus an Identity graph output reading `extraReader`, when given) rewritten with `constants`, and the one
    /// node of type `fusing` they became: nil, with the nodes checked unchanged, when no fusion is `expected`.
    private func optimized(_ nodes: inout [Node], constants: [String: Tensor], extraReader: String?, fusing opType: String,
                           expected: Bool, _ label: String) throws -> (GraphOptimizer.Rewritten, Node?) {
        var outputs: Set<String> = ["y"]
        if let extraReader {
            nodes.append(Node(name: "extra", opType: "Identity", inputs: [extraReader], outputs: ["extra"]))
            outputs.insert("extra")
        }
        let rewritten = GraphOptimizer.optimize(nodes, graphOutputs: outputs,
                                                constants: GraphOptimizer.Constants(initializers: constants, nodes: nodes))
        let fused = rewritten.nodes.filter { $0.opType == opType }
        XCTAssertEqual(fused.count, expected ? 1 : 0, label)
        guard expected else {
            XCTAssertEqual(rewritten.nodes.map(\.name), nodes.map(\.name), label)
            return (rewritten, nil)
        }
        XCTAssertEqual(rewritten.nodes.count, 1, label)
        return (rewritten, try XCTUnwrap(fused.first, label))
    }

    /// A model whose graph is `nodes` reading float `inputs`, its initializers given to the session instead.
    private func graphModel(nodes: [Node], outputs: [String], opset: Int, inputs: [String] = ["x"],
                            type: DataType = .float) throws -> Model {
        var model = try ExportFixture.named("llama-dynamo").model()
        model.graph.nodes = nodes
        model.graph.initializers = []
        model.graph.inputs = inputs.map { ValueInfo(name: $0, elementType: type, shape: nil) }
        model.graph.outputs = outputs.map { ValueInfo(name: $0, elementType: type, shape: nil) }
        model.opsetImports[""] = opset
        model.opsetImports[GraphOptimizer.internalDomain] = 1  // the fused nodes' domain, as the session imports it
        return model
    }
}

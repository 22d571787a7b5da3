// swift-tools-version:6.0
import PackageDescription

// The targets form a one-way graph, imports running only down it (lower targets never import higher ones):
//
//   ONNXBridge (C++ over libonnx/libprotobuf)      Kernels (our GEMM and elementwise kernels: C, sizes and strides, no ONNX)
//     <- ONNXGraph (the Swift model of a graph: tensors, import, edited copies written back)
//          <- Interpreter (ops with their gradient rules, the tape, sessions; over Kernels too)
//          <- Adapters (LoRA targets found by structure, LoRA values and injection, adapter formats, export)
//   Tokenizers (tokenizer.json, chat templates; Foundation only)
//   RunReports (TensorBoard event files, the HTML report of a run's metrics; Foundation only)
//   Distributed (the Communicator seam: one process, or Open MPI loaded at run time; Foundation only)
//   Interpreter, Adapters, Tokenizers, RunReports, Distributed
//     <- Training (preference data, objectives, optimisers, the trainer, inspection)
//          <- onnx-dpo (the command line: flags in, one library call, print)
let onnxDefines: [CXXSetting] = [
    .define("ONNX_ML", to: "1"),
    .define("ONNX_NAMESPACE", to: "onnx"),
]

let package = Package(
    name: "onnx-dpo",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "OnnxDPO", targets: ["ONNXGraph", "Interpreter", "Tokenizers", "Adapters", "RunReports", "Distributed", "Training"]),
        .executable(name: "onnx-dpo", targets: ["onnx-dpo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Our GEMM: C with per-function ISA attributes, dispatched at run time (see Sources/Kernels/dispatch.c).
        // -O2 in every configuration: a debug build's -O0 keeps the micro-kernels' accumulators in memory, which
        // makes the debug test suite's products tens of times slower.
        .target(
            name: "Kernels",
            cSettings: [.unsafeFlags(["-O2"])]
        ),
        .target(
            name: "ONNXBridge",
            cxxSettings: onnxDefines,
            linkerSettings: [
                .linkedLibrary("onnx"),
                .linkedLibrary("onnx_proto"),
                .linkedLibrary("protobuf"),
            ]
        ),
        .target(
            name: "ONNXGraph",
            dependencies: [
                "ONNXBridge",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        .target(
            name: "Interpreter",
            dependencies: [
                "ONNXGraph",
                "Kernels",
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .target(name: "Tokenizers"),
        .target(name: "RunReports"),
        // Open MPI is opened with dlopen when mpirun started the process: no MPI headers or library at build time.
        .target(name: "Distributed"),
        .target(
            name: "Adapters",
            dependencies: [
                "ONNXGraph",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Training",
            dependencies: [
                "ONNXGraph",
                "Interpreter",
                "Tokenizers",
                "Adapters",
                "RunReports",
                "Distributed",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "onnx-dpo",
            dependencies: [
                "ONNXGraph",
                "Interpreter",
                "Adapters",
                "Distributed",
                "Training",
                "RunReports",
                "Tokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "TestSupport",
            dependencies: ["ONNXGraph", "Interpreter", "Kernels"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "ONNXGraphTests",
            dependencies: ["ONNXGraph", "TestSupport"]
        ),
        .testTarget(
            name: "KernelTests",
            dependencies: ["Kernels", "TestSupport"]
        ),
        .testTarget(
            name: "InterpreterTests",
            dependencies: ["Interpreter", "Kernels", "ONNXGraph", "TestSupport"]
        ),
        .testTarget(
            name: "TokenizersTests",
            dependencies: ["Tokenizers", "ONNXGraph", "TestSupport"]
        ),
        .testTarget(
            name: "AdaptersTests",
            dependencies: ["Adapters", "Interpreter", "ONNXGraph", "TestSupport"]
        ),
        .testTarget(name: "RunReportsTests", dependencies: ["RunReports"]),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Training", "Adapters", "Tokenizers", "Interpreter", "ONNXGraph", "Distributed", "TestSupport"]
        ),
    ],
    cxxLanguageStandard: .cxx17
)

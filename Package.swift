// swift-tools-version:6.0
import PackageDescription

// The targets form one chain and imports run only down it:
// ONNXBridge (C++ over libonnx/libprotobuf) <- ONNXGraph <- Interpreter <- Finetune <- onnx-dpo,
// with Kernels (our GEMM, C, no ONNX) beside ONNXBridge at the bottom, used by Interpreter.
let onnxDefines: [CXXSetting] = [
    .define("ONNX_ML", to: "1"),
    .define("ONNX_NAMESPACE", to: "onnx"),
]

let package = Package(
    name: "onnx-dpo",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "OnnxDPO", targets: ["ONNXGraph", "Interpreter", "Finetune"]),
        .executable(name: "onnx-dpo", targets: ["onnx-dpo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
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
        .target(
            name: "Finetune",
            dependencies: [
                "ONNXGraph",
                "Interpreter",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "onnx-dpo",
            dependencies: [
                "ONNXGraph",
                "Interpreter",
                "Finetune",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "TestSupport",
            dependencies: ["ONNXGraph", "Interpreter"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "FinetuneTests",
            dependencies: ["Finetune", "Interpreter", "ONNXGraph", "TestSupport"],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "ONNXGraphTests",
            dependencies: ["ONNXGraph", "TestSupport"],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "KernelTests",
            dependencies: ["Kernels", "TestSupport"]
        ),
        .testTarget(
            name: "InterpreterTests",
            dependencies: ["Interpreter", "ONNXGraph", "TestSupport"],
            exclude: ["Fixtures"]
        ),
    ],
    cxxLanguageStandard: .cxx17
)

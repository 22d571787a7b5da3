// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for every file a user feeds onnx-dpo (see README, "Fuzzing and sanitizers"). A package of its
// own, depending on the main one by path, so that the main package's `swift build` and `swift test` neither build
// nor link it; `scripts/fuzz` builds it with `-sanitize=fuzzer,address` into `Fuzzing/.build`.
//
// One executable holds every target (it links once instead of seven times); `ONNX_DPO_FUZZ_TARGET` picks the
// parser, and `main.swift` starts libFuzzer's driver (`LLVMFuzzerRunDriver`, declared in `LibFuzzer`).
let package = Package(
    name: "onnx-dpo-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "onnx-dpo", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "onnx-dpo-fuzz",
            dependencies: [.product(name: "OnnxDPO", package: "onnx-dpo"), "LibFuzzer"]
        ),
        .target(name: "LibFuzzer"),
    ]
)

// swift-tools-version:5.10
// Donut: strain, tilt and thickness maps from scanning X-ray nanodiffraction (SXDM).
// docs/design.md describes the layout (with a diagram of this graph); the targets follow it:
// math (DonutPhysics, DonutNN, DonutCore) knows nothing of files or processes;
// files and processes (DonutIO, DonutMPI) know nothing of the math beyond its types;
// the pipelines (DonutPipeline: fit, infer, train, reprocess, refine, simulate) compose both
// with typed requests and outcomes, and the `donut` commands only parse options and call one.
import PackageDescription

/// The numerical targets are generic over Float/Double (Float runs, Double checks against
/// finite differences). Their hot loops are called from other modules, where they stay
/// unspecialised (witness-table arithmetic per element) unless the module exports its
/// bodies: cross-module optimisation makes the box forward model 2.8× faster
/// (`donut bench forward`). Release only; debug builds keep fast compiles.
let specialiseAcrossModules: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

/// `DonutKernelsAVX2` alone is compiled for AVX2 + FMA (Haswell and later, every AMD Zen);
/// `DonutNN` calls it only after CPUID says the CPU has both (`CDonutCPU`), so the binary still
/// runs on any x86-64. Other architectures build it without the flag and never call it.
#if arch(x86_64)
let avx2Kernels: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let avx2Kernels: [SwiftSetting] = []
#endif

let package = Package(
    name: "Donut",
    products: [
        .executable(name: "donut", targets: ["donut"]),
        .library(name: "DonutPhysics", targets: ["DonutPhysics"]),
        .library(name: "DonutCore", targets: ["DonutCore"]),
        .library(name: "DonutIO", targets: ["DonutIO"]),
        .library(name: "DonutPipeline", targets: ["DonutPipeline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // MARK: Public targets
        .executableTarget(
            name: "donut",
            dependencies: [
                "DonutPipeline", "DonutPhysics", "DonutNN", "DonutCore", "DonutIO", "DonutMPI", "DonutBLAS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        /// The fit, infer, train, reprocess, refine and simulate pipelines: typed requests in,
        /// outcomes out, collective under MPI; what the commands call (no option parsing here).
        .target(name: "DonutPipeline", dependencies: ["DonutCore", "DonutIO", "DonutMPI", "DonutPhysics", "DonutNN", "CDonutSignals"]),
        /// Forward models (box = published reference, smooth = differentiable), geometry, gradients.
        .target(name: "DonutPhysics", dependencies: ["DonutBLAS"], swiftSettings: specialiseAcrossModules),
        /// Tensors and layers with forward and backward side by side.
        .target(name: "DonutNN", dependencies: ["DonutBLAS", "DonutKernelsAVX2", "CDonutCPU"], swiftSettings: specialiseAcrossModules),
        /// Models, correlation fit, phantoms: the math that composes Physics and NN.
        .target(name: "DonutCore", dependencies: ["DonutPhysics", "DonutNN", "DonutBLAS"], swiftSettings: specialiseAcrossModules),
        /// HDF5 (serial and MPI-IO), NeXus result maps, .npy, YAML configs, PNG quick-looks.
        .target(name: "DonutIO", dependencies: [
            "CDonutBridge", "CPNG", "DonutMPI", "DonutCore", "DonutPhysics", "DonutNN",
            .product(name: "Yams", package: "Yams"),
        ]),
        /// Communicator (rank, size, allreduce, bcast, gather, abort) and shard arithmetic.
        .target(name: "DonutMPI", dependencies: ["CDonutBridge"]),

        // MARK: Implementation details
        /// Row-major GEMM over OpenBLAS for Float and Double (the one BLAS entry point).
        .target(name: "DonutBLAS", dependencies: ["CBLAS"], swiftSettings: specialiseAcrossModules),
        /// Float stencils of the direct convolution built for AVX2 + FMA (see `avx2Kernels`).
        .target(name: "DonutKernelsAVX2", swiftSettings: avx2Kernels),
        /// CPUID: whether the AVX2 + FMA kernels may run.
        .target(name: "CDonutCPU"),
        /// SIGTERM/SIGUSR1 handlers installed before any other code of the process runs
        /// (`.preinit_array`): a stop request during start-up is kept (`StopSignal`).
        .target(name: "CDonutSignals"),
        // C interop
        /// `static inline` accessors for MPI/HDF5 macros; no API of its own.
        .target(name: "CDonutBridge", dependencies: ["CMPI", "CHDF5"]),
        // System libraries: include and link paths come from pkg-config, as on Debian 12
        // (`libopenmpi-dev`, `libhdf5-openmpi-dev`, `libopenblas-dev`, `libpng-dev`; see scripts/setup).
        .systemLibrary(name: "CMPI", path: "Sources/CSystem/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CSystem/CHDF5", pkgConfig: "hdf5-openmpi",
                       providers: [.apt(["libhdf5-openmpi-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        /// libpng's simplified API (png_image_*): the quick-look PNGs.
        .systemLibrary(name: "CPNG", path: "Sources/CSystem/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),

        // MARK: Tests
        .testTarget(name: "DonutPhysicsTests", dependencies: ["DonutPhysics"]),
        /// Counts the test process's heap allocations (replaces malloc & co.): "no allocation in a step".
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(name: "DonutCoreTests", dependencies: ["DonutCore", "DonutPhysics", "DonutNN", "CAllocationCounter"]),
        .testTarget(name: "DonutIOTests", dependencies: ["DonutIO", "DonutCore", "DonutPhysics", "DonutMPI", "DonutNN", "CPNG"]),
        .testTarget(name: "DonutMPITests", dependencies: ["DonutMPI"]),
        /// Every layer's backward against central finite differences in Double; AdamW by hand.
        .testTarget(name: "DonutNNTests", dependencies: ["DonutNN", "DonutKernelsAVX2"]),
        /// The pipelines in-process (fit, infer, train, reprocess, refine), also under `mpirun -np 2`.
        .testTarget(name: "DonutPipelineTests", dependencies: ["DonutPipeline", "DonutIO", "DonutCore", "DonutPhysics", "DonutMPI"]),
        /// Runs the built `donut` binary, including under `mpirun -np 2`.
        .testTarget(name: "DonutCLITests", dependencies: ["donut", "DonutIO", "DonutCore", "DonutPhysics"]),
    ]
)

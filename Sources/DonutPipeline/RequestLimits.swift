/// Upper bounds on counts that only drive loops (no allocation tells when they are absurd):
/// a typo such as `--mc-samples 1000000000000` would otherwise run for ever. Each is far
/// above any useful value; the error names the option and the bound.
public enum RequestLimits {
    /// MC-dropout passes (`--mc-samples`): 30 is typical, the σ estimate settles long before.
    public static let monteCarloSamples = 10_000
    /// Levenberg–Marquardt iterations per frame (`--refine-iterations`): 8 is the default,
    /// convergence is reached within tens.
    public static let refineIterations = 1_000
}

import ArgumentParser
import DonutPhysics

@main
struct Donut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "donut",
        abstract: "Strain, tilt and thickness maps from scanning X-ray nanodiffraction.")
}

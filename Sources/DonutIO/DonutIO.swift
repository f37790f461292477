import DonutMPI
import CDonutBridge

// DonutNN: tensors and layers with forward and backward side by side (built in the DONUT/NanobeamNN issue).
import DonutBLAS

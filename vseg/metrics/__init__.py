"""Accuracy metrics: DAVIS-2017 J&F for VOS, confusion-matrix mIoU for VSS."""

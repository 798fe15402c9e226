"""Lightning training: the progressive-shrinking supernet module, the subnet module, trainer
set-up with checkpoints and resume, BN recalibration, distillation and importance."""

//! Host KVM events: recording them from tracefs and reading captures (vftrace's own, trace-cmd report text, raw tracefs text)

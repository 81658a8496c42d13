//! Guest/host clock alignment (KVM TSC offsets, marker events) and the merged timeline

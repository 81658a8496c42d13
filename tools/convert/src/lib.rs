//! Timeline writers (Chrome trace JSON, Perfetto protobuf) and streaming conversion of uftrace directories

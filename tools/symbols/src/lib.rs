//! uftrace .sym files from ELF symbol tables, relocated to a load address

"""photocomp: a differentiable compiler for programmable photonic MZI meshes."""

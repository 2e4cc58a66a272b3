import numpy as np, timeit, torch
from sparsify.accel.layers import make_sparse
torch.set_num_threads(1); torch.set_grad_enabled(False)
rng=np.random.default_rng(0)
g=globals()
def t(s,n=2000): return min(timeit.repeat(s,number=n,repeat=9,globals=g))/n*1e6
for (o,i,b) in [(100,300,1),(300,784,1),(10,100,1),(100,300,16)]:
    w=(rng.standard_normal((o,i))*(rng.random((o,i))<0.1)).astype(np.float32)
    lin=torch.nn.Linear(i,o); lin.weight.data=torch.from_numpy(w)
    sl=make_sparse(lin,"spk_csr" if b==1 else "spk"); x=torch.randn(b,i)
    for _ in range(100): sl(x); lin(x)
    print(o,i,b,f"sparse {t('sl(x)'):.1f} us dense {t('lin(x)'):.1f} us")

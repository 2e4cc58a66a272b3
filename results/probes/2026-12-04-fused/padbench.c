#include "../../../sparsify/kernels/spk.c" /* compile from this folder */
#include <stdio.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int C=atoi(argv[1]),H=atoi(argv[2]),sw=atoi(argv[3]); int W=H,ph=1,pw=1; float fillv=argc>4?atof(argv[4]):0.f;
  float*x=aligned_alloc(64,(size_t)C*H*W*4); for(long i=0;i<(long)C*H*W;i++)x[i]=i%7;
  const int64_t Hp=H+2, Wp=W+2, Wq=(Wp+sw-1)/sw, Ws=(Wq+VW-1)/VW*VW+VW, plane=Hp*Ws;
  float*buf=aligned_alloc(64,(size_t)sw*plane*4+64);
  const float*xend=x+(long)C*H*W; double best=1e9; volatile float sink=0;
  for(int rep=0;rep<30;rep++){ double a=now();
    for(int c=0;c<C;c++){ const float*xp=x+(long)c*H*W;
      for(int b=0;b<sw;b++) for(int64_t r=0;r<Hp;r++){ int64_t iy=r-ph;
        pad_row(buf+b*plane+r*Ws,Ws,iy<0||iy>=H?NULL:xp+iy*W,W,b,sw,pw,xend,fillv);}
      sink+=buf[Ws+3]; }
    double t=now()-a; if(t<best)best=t; }
  printf("C=%d H=%d sw=%d: pad %.1f us, %.1f ns per row-phase\n",C,H,sw,best*1e6,best*1e9/(C*sw*(H+2)));
}

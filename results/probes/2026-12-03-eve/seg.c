/* Per-segment overhead: the shipped tile-loop shape over segments of binomial(KB, d) nonzeros
 * (X slice KB x 64 floats, accumulators reloaded from / stored to a P x 64 tile per segment). */
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int KB=atoi(argv[1]), P=atoi(argv[2]); double d=atof(argv[3]); int NKB=atoi(argv[4]);
  float*X=aligned_alloc(64,(size_t)KB*NKB*64*4); for(long i=0;i<(long)KB*NKB*64;i++)X[i]=1e-3f*(i%7);
  float*Y=aligned_alloc(64,(size_t)P*64*4);
  int64_t*ptr=malloc(sizeof(int64_t)*((size_t)P*NKB+1)); int32_t*idx=malloc(4*(size_t)P*NKB*KB); float*val=malloc(4*(size_t)P*NKB*KB);
  srand(3); int64_t n=0; ptr[0]=0;
  for(int kb=0;kb<NKB;kb++) for(int q=0;q<P;q++){ for(int c=0;c<KB;c++) if(rand()<d*RAND_MAX){idx[n]=kb*KB+c;val[n]=1e-3f;n++;} ptr[kb*P+q+1]=n; }
  int reps=(int)(2e8/(n*64.0))+1; double best=1e9;
  for(int t=0;t<9;t++){ double s0=now();
   for(int r=0;r<reps;r++) for(int kb=0;kb<NKB;kb++){ const int64_t*pk=ptr+(int64_t)kb*P;
    for(int q=0;q<P;q++){ int64_t s=pk[q],e=pk[q+1]; float*yq=Y+q*64;
      __m512 a0,a1,a2,a3,b0=_mm512_setzero_ps(),b1=b0,b2=b0,b3=b0;
      if(kb==0){a0=b0;a1=b0;a2=b0;a3=b0;} else {a0=_mm512_load_ps(yq);a1=_mm512_load_ps(yq+16);a2=_mm512_load_ps(yq+32);a3=_mm512_load_ps(yq+48);}
      int64_t j=s;
      for(;j+2<=e;j+=2){ const float*p=X+(int64_t)idx[j]*64; __m512 v=_mm512_set1_ps(val[j]);
        a0=_mm512_fmadd_ps(v,_mm512_load_ps(p),a0);a1=_mm512_fmadd_ps(v,_mm512_load_ps(p+16),a1);a2=_mm512_fmadd_ps(v,_mm512_load_ps(p+32),a2);a3=_mm512_fmadd_ps(v,_mm512_load_ps(p+48),a3);
        const float*pq=X+(int64_t)idx[j+1]*64; __m512 w=_mm512_set1_ps(val[j+1]);
        b0=_mm512_fmadd_ps(w,_mm512_load_ps(pq),b0);b1=_mm512_fmadd_ps(w,_mm512_load_ps(pq+16),b1);b2=_mm512_fmadd_ps(w,_mm512_load_ps(pq+32),b2);b3=_mm512_fmadd_ps(w,_mm512_load_ps(pq+48),b3);}
      for(;j<e;j++){ const float*p=X+(int64_t)idx[j]*64; __m512 v=_mm512_set1_ps(val[j]);
        a0=_mm512_fmadd_ps(v,_mm512_load_ps(p),a0);a1=_mm512_fmadd_ps(v,_mm512_load_ps(p+16),a1);a2=_mm512_fmadd_ps(v,_mm512_load_ps(p+32),a2);a3=_mm512_fmadd_ps(v,_mm512_load_ps(p+48),a3);}
      _mm512_store_ps(yq,_mm512_add_ps(a0,b0));_mm512_store_ps(yq+16,_mm512_add_ps(a1,b1));_mm512_store_ps(yq+32,_mm512_add_ps(a2,b2));_mm512_store_ps(yq+48,_mm512_add_ps(a3,b3));
    }}
   double e=now()-s0; if(e<best)best=e;}
  double fl=2.0*64*n*reps; printf("KB %4d P %4d d %.2f NKB %3d: %5.1f GFLOP/s, %.1f nnz/segment, %.2f cycles/nnz at 3.64 GHz\n",KB,P,d,NKB,fl/best/1e9,(double)n/(P*NKB),best*3.64e9/((double)n*reps));
  return Y[5]>1e30;
}

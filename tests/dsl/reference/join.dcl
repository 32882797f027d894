
    function FunA (A, B) => (C);
    function FunB (A, B,C) => (D);
    function FunC (D) => (E);
    
    composition Test (InputA, InputB) => (OutputE) { 
        FunA (
            A = keyed InputA,
            B = keyed InputB
        ) => 
            (InterC = C)
        by A right B;
    
        FunB (
            A = keyed InputA,
            B = keyed InputB,
            C = keyed InputC
        ) => (
            InterD = D
        ) by A
          left B  full C;
        
        FunB (
            A = keyed InputA,
            B = keyed InputB,
            C = keyed InputC
        ) => (
            InterD = D
        ) by A cross B inner C; 

        FunC
            ( D = all InterD ) =>
            ( OutputE = E) ;
    }


    function FunA (A, B) => (C);
    function FunB (A, B,C) => (D);
    function FunC (D) => (E);
    
    composition Test (InputA, InputB) => (OutputE) { 
        FunA (
            A = keyed InputA,
            B = keyed InputB
        ) => 
            (InterC = C)
        ;
    
        FunB (
            A = keyed InputA,
            B = anyKeyed InputB,
            C = anyEach InputC
        ) => (
            InterD = D
        );
        
        FunC
            ( D = all InterD ) =>
            ( OutputE = E);
    }

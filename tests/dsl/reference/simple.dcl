
    function HTTP(Request) => (Response);
    function MakePNGGrayscaleS3 (S3GetResponse) => (S3PutRequest);
    
    composition MakePNGGrayscale (S3GetRequest) => () {
        HTTP(Request = keyed S3GetRequest) => (ToProcess = Response);
        MakePNGGrayscaleS3 (  S3GetResponse = keyed ToProcess ) => (PutRequest = S3PutRequest) ;
        HTTP ( Request = keyed PutRequest) => ( );
    }
